"""The injected init container: ``loom k8s connect-init``, one per service.

It waits until the pod's service instance and its sidecar are registered, writes the proxy ID
into the shared volume and, with transparent proxy, installs the traffic redirection (so it
runs as root with ``NET_ADMIN``; otherwise as an unprivileged user). The plan's
``RedirectConfig`` travels as its ``to_flags()`` after ``--``, which connect-init parses back
with ``RedirectConfig.from_flags``. Multi-port pods get one
per service, named ``loom-connect-init-<service>``. It is appended after the pod's own init
containers, which therefore run before redirection is in place.
"""

from __future__ import annotations

from typing import Any

from loom.inject.env import downward_env
from loom.inject.plan import ServicePlan, WorkloadPlan
from loom.inject.settings import INIT_UID, InjectSettings
from loom.inject.volumes import DATA_DIR, data_mount

INIT_CONTAINER = "loom-connect-init"
"""Name of the init container (``-<service>`` appended for multi-port pods)."""


def init_container(
    plan: WorkloadPlan, service: ServicePlan, settings: InjectSettings
) -> dict[str, Any]:
    """The init container of ``service``."""
    args = [f"--http-addr={settings.server.http_addr}", f"--output-dir={DATA_DIR}"]
    if plan.multi_port:
        args.append(f"--service-name={service.name}")
    if plan.consul_namespace is not None:
        args.append(f"--consul-namespace={plan.consul_namespace}")
    if plan.redirect is not None:
        args += ["--", *plan.redirect.to_flags()]
    container: dict[str, Any] = {
        "name": INIT_CONTAINER + service.suffix,
        "image": settings.images.loom,
        "command": ["loom", "k8s", "connect-init"],
        "args": args,
        "env": downward_env(),
        "securityContext": _security_context(plan.redirect is not None),
        "volumeMounts": [data_mount()],
    }
    resources = settings.init_resources.to_k8s()
    if resources:
        container["resources"] = resources
    return container


def _security_context(redirects: bool) -> dict[str, Any]:
    if redirects:
        # iptables in the pod's network namespace: root with NET_ADMIN, nothing else.
        return {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "privileged": False,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        }
    return {
        "runAsUser": INIT_UID,
        "runAsGroup": INIT_UID,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
