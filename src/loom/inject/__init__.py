"""The connect injection planner: pure, shared by every front-end.

``plan_injection(pod, namespace, settings)`` decides whether a pod joins the mesh and returns
the injected copy; ``plan_workload`` gives what its ``consul.hashicorp.com/*`` annotations ask
for (services, upstreams, transparent proxy and its ``RedirectConfig``, probes, resources). The
webhook, ``loom inject`` and ``loom local`` all call these, with settings parsed once from
Helm-style values by ``InjectSettings.from_values``. No I/O happens in this package.
"""

from loom.inject.decision import InjectionDecision, NamespaceInfo, decide_injection
from loom.inject.errors import InjectError, InjectionRefused, SettingsError
from loom.inject.injection import InjectionResult, apply_plan, plan_injection
from loom.inject.plan import InvalidPod, ServicePlan, WorkloadPlan, plan_workload
from loom.inject.probes import ExposedProbe
from loom.inject.settings import PROXY_UID, ContainerResources, InjectSettings
from loom.inject.upstreams import UpstreamPlan

__all__ = [
    "PROXY_UID",
    "ContainerResources",
    "ExposedProbe",
    "InjectError",
    "InjectSettings",
    "InjectionDecision",
    "InjectionRefused",
    "InjectionResult",
    "InvalidPod",
    "NamespaceInfo",
    "ServicePlan",
    "SettingsError",
    "UpstreamPlan",
    "WorkloadPlan",
    "apply_plan",
    "decide_injection",
    "plan_injection",
    "plan_workload",
]
