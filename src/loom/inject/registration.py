"""The Consul service registrations a planned workload asks for (pure).

Whoever registers a pod's services (the Kubernetes controller, ``loom local``, a test) turns
the ``WorkloadPlan`` into ``PUT /v1/agent/service/register`` bodies here, so the meaning of the
annotations lives in one place. Each service gets the ID ``<pod>-<service>`` and a
``Connect.SidecarService`` on its proxy port; ``Meta`` carries ``pod-name`` and
``k8s-namespace``, which ``loom k8s connect-init`` uses to find the instance. Upstreams go on
the first service's sidecar only (seed 000's multi-port caveat).
"""

from __future__ import annotations

from typing import Any

from loom.inject.annotations import MANAGED_BY_VALUE
from loom.inject.plan import ServicePlan, WorkloadPlan

META_POD_NAME = "pod-name"
"""Service meta key holding the pod's name."""
META_K8S_NAMESPACE = "k8s-namespace"
"""Service meta key holding the pod's Kubernetes namespace."""
META_K8S_SERVICE = "k8s-service-name"
"""Service meta key holding the service name (as the Kubernetes Service is named)."""
META_MANAGED_BY = "managed-by"
"""Service meta key naming the registrar."""


def service_id(pod_name: str, service: ServicePlan) -> str:
    """The registered service's ID; its sidecar's is this plus ``-sidecar-proxy``."""
    return f"{pod_name}-{service.name}"


def service_registrations(
    plan: WorkloadPlan, pod_name: str, k8s_namespace: str, address: str
) -> list[dict[str, Any]]:
    """One agent registration body per service of the plan, in plan order."""
    return [
        _registration(plan, index, service, pod_name, k8s_namespace, address)
        for index, service in enumerate(plan.services)
    ]


def _registration(
    plan: WorkloadPlan,
    index: int,
    service: ServicePlan,
    pod_name: str,
    k8s_namespace: str,
    address: str,
) -> dict[str, Any]:
    meta = dict(service.meta)
    meta.update(
        {
            META_POD_NAME: pod_name,
            META_K8S_NAMESPACE: k8s_namespace,
            META_K8S_SERVICE: service.name,
            META_MANAGED_BY: MANAGED_BY_VALUE,
        }
    )
    proxy: dict[str, Any] = {
        "Mode": "transparent" if plan.transparent_proxy else "direct",
        "LocalServiceAddress": "127.0.0.1",
    }
    if service.port is not None:
        proxy["LocalServicePort"] = service.port
    if plan.redirect is not None:
        proxy["TransparentProxy"] = {"OutboundListenerPort": plan.redirect.proxy_outbound_port}
    if index == 0 and plan.upstreams:
        proxy["Upstreams"] = [u.to_registration() for u in plan.upstreams]
    if plan.expose_paths:
        proxy["Expose"] = {"Paths": [p.to_registration() for p in plan.expose_paths]}
    if service.protocol is not None:
        proxy["Config"] = {"protocol": service.protocol}
    body: dict[str, Any] = {
        "ID": service_id(pod_name, service),
        "Name": service.name,
        "Address": address,
        "Port": service.port or 0,
        "Tags": list(service.tags),
        "Meta": meta,
        "Connect": {"SidecarService": {"Port": service.proxy_port, "Proxy": proxy}},
    }
    if plan.consul_namespace is not None:
        body["Namespace"] = plan.consul_namespace
    return body
