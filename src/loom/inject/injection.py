"""``plan_injection``: decide, plan, and produce the injected copy of a pod.

This is the one entry point both Kubernetes front-ends call (the admission webhook and
``loom inject``): it never mutates its input, and for the same inputs returns the same
``InjectionResult`` (the decision, the reasons, the plan and the mutated pod). Each concern of
the mutation lives in its own module (init container, sidecar, env, volumes, probes,
metadata); this module only orders them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loom.inject.decision import NamespaceInfo, decide
from loom.inject.env import add_env, upstream_env
from loom.inject.init_container import init_container
from loom.inject.metadata import mark_injected
from loom.inject.plan import (
    InvalidPod,
    WorkloadPlan,
    app_containers,
    plan_workload,
    pod_annotations,
)
from loom.inject.probes import rewrite_probes
from loom.inject.settings import InjectSettings
from loom.inject.sidecar import sidecar_container
from loom.inject.volumes import add_data_volume


@dataclass(frozen=True)
class InjectionResult:
    """The outcome for one pod: injected or not, why, and the injected copy."""

    inject: bool
    """True when the pod was injected (``pod`` is then the injected copy)."""
    pod: dict[str, Any] | None
    """The injected pod; None when not injected."""
    reasons: tuple[str, ...]
    """The decision and planning steps, one short sentence each."""
    plan: WorkloadPlan | None
    """The workload plan; None when not injected."""


def plan_injection(
    pod: Mapping[str, Any], namespace: NamespaceInfo, settings: InjectSettings
) -> InjectionResult:
    """Decide whether to inject ``pod`` and, if so, return the injected copy.

    Raises ``InjectionRefused`` (naming the annotation and value) for a pod asking for
    injection with annotations Loom cannot honour, and ``InvalidPod`` for a pod without
    containers.
    """
    decision = decide(pod_annotations(pod), namespace, settings)
    if not decision.inject:
        return InjectionResult(False, None, decision.reasons, None)
    plan = plan_workload(pod, namespace, settings)
    return InjectionResult(
        True, apply_plan(pod, plan, settings), decision.reasons + plan.reasons, plan
    )


def apply_plan(
    pod: Mapping[str, Any], plan: WorkloadPlan, settings: InjectSettings
) -> dict[str, Any]:
    """The injected copy of ``pod`` for ``plan`` (the input is left untouched)."""
    app_containers(pod)
    out: dict[str, Any] = copy.deepcopy(dict(pod))
    spec: dict[str, Any] = out["spec"]
    containers: list[dict[str, Any]] = spec["containers"]
    init_containers: list[dict[str, Any]] = spec.setdefault("initContainers", [])

    if plan.overwrite_probes:
        rewrite_probes(containers, plan.expose_paths)
    pairs = upstream_env(plan.upstreams)
    for container in containers:
        add_env(container, pairs)

    taken = {c.get("name") for c in containers + init_containers}
    for service in plan.services:
        init = init_container(plan, service, settings)
        sidecar = sidecar_container(plan, service, settings)
        for new in (init, sidecar):
            if new["name"] in taken:
                raise InvalidPod(f"pod spec: a container is already named {new['name']}")
        init_containers.append(init)
        containers.append(sidecar)
    add_data_volume(spec)
    mark_injected(out, pod, plan)
    return out
