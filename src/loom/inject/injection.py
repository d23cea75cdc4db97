"""``plan_injection``: decide, plan, and produce the injected copy of a pod.

This is the one entry point both Kubernetes front-ends call (the admission webhook and
``loom inject``): it never mutates its input, and for the same inputs returns the same
``InjectionResult`` (the decision, the reasons, the plan and the mutated pod). Each concern of
the mutation lives in its own module (init container, sidecar, env, volumes, probes,
metadata); this module only orders them.

What the planner decides depends on a pod's annotations and containers only (and the
namespace and settings), not on its name or labels: ``plan_template`` is that part, the
decision, the plan and the injected init and sidecar containers, which a caller may keep and
hand back to ``plan_injection`` for every pod agreeing on those inputs (the webhook does, for
pods that differ only in fields the planner copies verbatim).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from loom.inject.decision import InjectionDecision, NamespaceInfo, decide_injection
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
from loom.inject.volumes import add_ca_volume, add_data_volume


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


@dataclass(frozen=True)
class TemplatePlan:
    """What ``plan_injection`` decides from a pod's annotations and containers alone."""

    decision: InjectionDecision
    """Inject or not, and why."""
    plan: WorkloadPlan | None
    """The workload plan; None when not injected."""
    added: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = ()
    """The init container and the sidecar of each service of ``plan``, in order. Shared by
    every result made from this template with ``share_unchanged``: never mutated."""


def plan_template(
    pod: Mapping[str, Any], namespace: NamespaceInfo, settings: InjectSettings
) -> TemplatePlan:
    """The decision, the plan and the injected containers of ``pod``: a function of its
    ``metadata.annotations`` and ``spec.containers`` (with the namespace and settings) only.
    Raises as ``plan_injection`` does."""
    decision = decide_injection(pod_annotations(pod), namespace, settings)
    if not decision.inject:
        return TemplatePlan(decision, None)
    plan = plan_workload(pod, namespace, settings)
    added = tuple(
        (init_container(plan, service, settings), sidecar_container(plan, service, settings))
        for service in plan.services
    )
    return TemplatePlan(decision, plan, added)


def plan_injection(
    pod: Mapping[str, Any],
    namespace: NamespaceInfo,
    settings: InjectSettings,
    *,
    share_unchanged: bool = False,
    template: TemplatePlan | None = None,
    plain: bool = False,
) -> InjectionResult:
    """Decide whether to inject ``pod`` and, if so, return the injected copy.

    Raises ``InjectionRefused`` (naming the annotation and value) for a pod asking for
    injection with annotations Loom cannot honour, and ``InvalidPod`` for a pod without
    containers. The input is never mutated. With ``share_unchanged`` the result shares the
    sub-objects injection did not touch with the input (the webhook's fast path: it only
    diffs and serialises the result); otherwise the result is fully independent.
    ``template``: ``plan_template`` of a pod with the same annotations and containers, in the
    same namespace with the same settings (the caller vouches for that); planned anew if None.
    ``plain``: the pod holds no float (the caller read it so; see ``original_pod_json``).
    """
    if template is None:
        template = plan_template(pod, namespace, settings)
    decision, plan = template.decision, template.plan
    if plan is None:
        return InjectionResult(False, None, decision.reasons, None)
    out = inject_shared(pod, plan, settings, template.added, plain)
    if not share_unchanged:
        out = copy_tree(out)
    return InjectionResult(True, out, decision.reasons + plan.reasons, plan)


def apply_plan(
    pod: Mapping[str, Any], plan: WorkloadPlan, settings: InjectSettings
) -> dict[str, Any]:
    """The injected copy of ``pod`` for ``plan``, independent of the input."""
    result: dict[str, Any] = copy_tree(inject_shared(pod, plan, settings))
    return result


def inject_shared(
    pod: Mapping[str, Any],
    plan: WorkloadPlan,
    settings: InjectSettings,
    added: tuple[tuple[dict[str, Any], dict[str, Any]], ...] | None = None,
    plain: bool = False,
) -> dict[str, Any]:
    """The injected pod, copying only what injection changes (copy-on-write): every object
    on the path to a change is new, everything else is the input's own object (and the
    ``added`` init and sidecar containers of ``plan_template``, made here when None)."""
    app_containers(pod)
    out: dict[str, Any] = dict(pod)
    out["metadata"] = inject_metadata(pod, plan, plain)
    out["spec"] = inject_spec(pod, plan, settings, added)
    return out


SPEC_FIELDS = ("containers", "initContainers", "volumes")
"""The fields of a pod's ``spec`` that ``inject_spec`` reads: its result is a function of
these, the plan and the settings (the webhook keys the patches of spec parts by them)."""


METADATA_FIELDS = ("annotations", "labels")
"""The keys of a pod's ``metadata`` that ``inject_metadata`` changes (always new objects, even
when the pod has none), sorted: the rest of its result is the input's own objects."""


def inject_metadata(
    pod: Mapping[str, Any], plan: WorkloadPlan, plain: bool = False
) -> dict[str, Any]:
    """The injected pod's ``metadata`` (copy-on-write, as ``inject_shared``): the input's
    with the injection annotations and labels; ``plain``: as for ``original_pod_json``."""
    metadata = dict(pod.get("metadata") or {})
    metadata["annotations"] = dict(metadata.get("annotations") or {})
    metadata["labels"] = dict(metadata.get("labels") or {})
    mark_injected(metadata, pod, plan, plain)
    return metadata


def inject_spec(
    pod: Mapping[str, Any],
    plan: WorkloadPlan,
    settings: InjectSettings,
    added: tuple[tuple[dict[str, Any], dict[str, Any]], ...] | None = None,
) -> dict[str, Any]:
    """The injected pod's ``spec`` (copy-on-write, as ``inject_shared``), reading only its
    ``SPEC_FIELDS``; refuses (``InvalidPod``) a container or volume name injection needs."""
    originals = app_containers(pod)
    spec: dict[str, Any] = dict(pod["spec"])
    pairs = upstream_env(plan.upstreams)
    probed = {p.container for p in plan.expose_paths} if plan.overwrite_probes else set()
    containers: list[dict[str, Any]] = [
        copy_tree(c) if pairs or c["name"] in probed else cast(dict[str, Any], c) for c in originals
    ]
    spec["containers"] = containers
    # The pod's own init containers get the upstream env vars too, as in consul-k8s.
    init_containers: list[dict[str, Any]] = [
        copy_tree(c) if pairs else c for c in spec.get("initContainers") or []
    ]
    spec["initContainers"] = init_containers
    spec["volumes"] = list(spec.get("volumes") or [])

    if probed:
        rewrite_probes([c for c in containers if c["name"] in probed], plan.expose_paths)
    for container in containers + init_containers:
        add_env(container, pairs)

    taken = {c.get("name") for c in containers + init_containers}
    if added is None:
        added = tuple(
            (init_container(plan, service, settings), sidecar_container(plan, service, settings))
            for service in plan.services
        )
    for init, sidecar in added:
        for new in (init, sidecar):
            if new["name"] in taken:
                raise InvalidPod(f"pod spec: a container is already named {new['name']}")
        init_containers.append(init)
        containers.append(sidecar)
    add_data_volume(spec)
    if settings.server_ca.mounted:
        add_ca_volume(spec, settings.server_ca.secret_name, settings.server_ca.secret_key)
    return spec


def copy_tree(value: Any) -> Any:
    """A deep copy of a JSON/YAML tree (mappings, lists, immutable scalars); several times
    faster than ``copy.deepcopy``, which matters on the webhook's hot path."""
    kind = type(value)
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        return {k: copy_tree(v) for k, v in value.items()}
    if kind is list:
        return [copy_tree(v) for v in value]
    return value
