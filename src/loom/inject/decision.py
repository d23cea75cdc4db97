"""Whether a pod is injected at all, with the reasons for the answer.

The order is Consul's: the injector switched off; ``kube-system`` and ``kube-public`` never;
the deny list (which wins over the allow list); the allow list (``*`` is every namespace);
pods already injected (carrying ``connect-inject-status``) left alone; then the pod's
``connect-inject`` annotation, strictly parsed, or ``connectInject.default`` without one.
Like linkerd's injection report, the decision is a value the front-ends can show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from loom.inject.annotations import CONNECT_INJECT, INJECT_STATUS, parse_bool, text
from loom.inject.settings import InjectSettings

NEVER_INJECTED_NAMESPACES = ("kube-system", "kube-public")


@dataclass(frozen=True)
class NamespaceInfo:
    """The Kubernetes namespace a pod is created in, as far as the planner needs it."""

    name: str
    """Namespace name (the AdmissionReview's ``request.namespace``)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """The Namespace object's labels (``consul.hashicorp.com/transparent-proxy`` is read)."""


@dataclass(frozen=True)
class InjectionDecision:
    """Inject or not, and why (one short sentence per rule that decided)."""

    inject: bool
    reasons: tuple[str, ...]


def decide_injection(
    annotations: Mapping[str, object], namespace: NamespaceInfo, settings: InjectSettings
) -> InjectionDecision:
    """Apply the injection rules in order; refuses a malformed ``connect-inject`` value."""
    ns = namespace.name
    if not settings.enabled:
        return InjectionDecision(False, ("connectInject.enabled is false",))
    if ns in NEVER_INJECTED_NAMESPACES:
        return InjectionDecision(False, (f"namespace {ns} is never injected",))
    if ns in settings.deny_namespaces:
        return InjectionDecision(False, (f"namespace {ns} is in connectInject.k8sDenyNamespaces",))
    if "*" not in settings.allow_namespaces and ns not in settings.allow_namespaces:
        return InjectionDecision(
            False, (f"namespace {ns} is not in connectInject.k8sAllowNamespaces",)
        )
    if INJECT_STATUS in annotations:
        return InjectionDecision(False, (f"already injected ({INJECT_STATUS} is set)",))
    value = text(annotations, CONNECT_INJECT)
    if value is not None:
        wanted = parse_bool(CONNECT_INJECT, value)
        return InjectionDecision(wanted, (f"annotation {CONNECT_INJECT} is {value!r}",))
    if settings.default_inject:
        return InjectionDecision(True, (f"connectInject.default is true and no {CONNECT_INJECT}",))
    return InjectionDecision(
        False, (f"no {CONNECT_INJECT} annotation and connectInject.default is false",)
    )
