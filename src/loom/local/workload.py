"""What ``loom local run`` flags mean, through the one injection planner (pure).

The flags become a minimal pod (name, annotations, one container with the port), and the
Kubernetes injector's ``plan_workload`` decides services, upstreams, transparent proxy and
exclusions from the seeds' ``consul.hashicorp.com/*`` annotations, exactly as the webhook
would. Nothing about annotations is interpreted here, and the plan's ``redirect`` (a
``RedirectConfig``) is applied as it is, in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loom.inject import InjectError, InjectSettings, NamespaceInfo, WorkloadPlan, plan_workload
from loom.keyvalue import KeyValueError, parse_key_values
from loom.local.errors import WorkloadError as WorkloadError  # re-exported for the CLI
from loom.local.errors import WorkloadRefused

ANNOTATION_PREFIX = "consul.hashicorp.com/"


def parse_annotations(pairs: Sequence[str]) -> dict[str, str]:
    """``--annotation KEY=VALUE`` flags (prefixes are added by ``plan_local``)."""
    try:
        return parse_key_values(pairs, "--annotation")
    except KeyValueError as exc:
        raise WorkloadError(str(exc)) from exc


def full_keys(annotations: dict[str, str]) -> dict[str, str]:
    """A bare key means ``consul.hashicorp.com/<key>``."""
    return {(k if "/" in k else ANNOTATION_PREFIX + k): v for k, v in annotations.items()}


def local_pod(name: str, ports: Sequence[int], annotations: dict[str, str]) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "local"}
    if ports:
        container["ports"] = [{"containerPort": p} for p in ports]
    annotations = {ANNOTATION_PREFIX + "connect-inject": "true", **full_keys(annotations)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"containers": [container]},
    }


def plan_local(
    name: str, ports: Sequence[int], annotations: dict[str, str], settings: InjectSettings
) -> WorkloadPlan:
    """The injector's plan of the workload; its refusal is a ``WorkloadRefused``."""
    try:
        return plan_workload(
            local_pod(name, ports, annotations), NamespaceInfo("default"), settings
        )
    except InjectError as exc:
        raise WorkloadRefused(str(exc)) from exc


def resolv_conf(nameserver: str) -> str:
    """A pod's resolv.conf, Kubernetes-style. The app's queries are redirected to the
    sidecar's DNS proxy whatever it says; the proxy (and Envoy, for external hosts) forward
    the rest to ``nameserver``, the node's DNS server."""
    return (
        "# Written by loom local: port 53 is redirected to the sidecar's DNS proxy.\n"
        f"nameserver {nameserver}\n"
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )


@dataclass(frozen=True)
class AppProcess:
    """One app process of a pod: ``loom local run``'s command, or a container of ``apply``."""

    name: str | None
    """The container's name; None for ``loom local run``'s single app (its log: app.log)."""
    argv: tuple[str, ...]
    env: Callable[[str], dict[str, str]] | None = None
    """The container's variables given the pod's IP; None: the host's environment."""
    mounts: tuple[tuple[str, str, bool], ...] = ()
    """Bind mounts (source, target, read-only) made in its mount namespace first."""
