"""The workload plan: what a pod's annotations ask of the mesh, as one immutable value.

``plan_workload(pod, namespace, settings)`` reads the pod (template) and returns a
``WorkloadPlan``: the services it serves (one per port for multi-port pods, each with its own
sidecar port 20000, 20001, ...), its explicit upstreams, transparent proxy and its
``RedirectConfig``, the probes moved to expose listeners, the sidecar's resources and Envoy
arguments, the Consul namespace. It is pure and deterministic: the webhook, ``loom inject``,
``loom local`` and the registration code all call it, so the annotations mean the same
everywhere. Malformed annotations raise ``InjectionRefused`` naming the annotation and the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from loom.defaults import PUBLIC_LISTENER_PORT
from loom.inject import annotations as ann
from loom.inject.decision import NamespaceInfo
from loom.inject.errors import InjectError, InjectionRefused
from loom.inject.metrics import MetricsPlan, plan_metrics
from loom.inject.probes import ExposedProbe, plan_expose_paths
from loom.inject.redirect import exclude_inbound, plan_redirect
from loom.inject.settings import PROXY_UID, ContainerResources, InjectSettings
from loom.inject.upstreams import UpstreamPlan, parse_upstreams
from loom.redirect.config import RedirectConfig

FIRST_PROXY_PORT = PUBLIC_LISTENER_PORT
"""The first sidecar's public listener; the i-th service's sidecar uses 20000 + i."""


class InvalidPod(InjectError):
    """The object handed to the planner is not a pod (template) the planner can read."""


@dataclass(frozen=True)
class ServicePlan:
    """One Consul service served by the pod, with its own sidecar."""

    name: str
    """Consul service name (``connect-service``; default: the first container's name)."""
    port: int | None
    """Application port inbound mesh traffic is delivered to; None: the pod serves nothing
    (a client-only workload such as static-client)."""
    protocol: str | None
    """``connect-service-protocol`` or ``centralConfig.defaultProtocol``; None: tcp."""
    tags: tuple[str, ...]
    """``service-tags``, applied to the service and its sidecar."""
    meta: tuple[tuple[str, str], ...]
    """``service-meta-<key>`` pairs (sorted by key), applied to the service and its sidecar."""
    proxy_port: int
    """The sidecar's public mTLS listener port (20000 + index)."""
    suffix: str = ""
    """``""`` for single-service pods; ``-<name>`` for multi-port pods, appended to the
    injected container names and the proxy-ID file."""


@dataclass(frozen=True)
class WorkloadPlan:
    """Everything the annotations of one pod ask for."""

    services: tuple[ServicePlan, ...]
    """The services of the pod, in annotation order (one unless multi-port)."""
    upstreams: tuple[UpstreamPlan, ...]
    """Explicit upstreams; configured on the first service's sidecar only."""
    transparent_proxy: bool
    """Redirect all traffic through the sidecar (annotation > namespace label > default)."""
    redirect: RedirectConfig | None
    """The traffic redirection connect-init (or ``loom local``) installs; set exactly when
    ``transparent_proxy``."""
    overwrite_probes: bool
    """HTTP probes moved to the sidecar's expose listeners (only with transparent proxy)."""
    expose_paths: tuple[ExposedProbe, ...]
    """The probes moved, for the sidecar registration's ``Proxy.Expose.Paths``."""
    envoy_extra_args: tuple[str, ...]
    """Extra Envoy command-line arguments (annotation, else ``connectInject.envoyExtraArgs``)."""
    consul_namespace: str | None
    """Consul namespace the services are registered in; None when namespaces are off."""
    sidecar_resources: ContainerResources
    """ContainerResources of each sidecar (settings, overridden per field by annotations)."""
    reasons: tuple[str, ...]
    """Why: the decisions taken, one short sentence each."""
    metrics: MetricsPlan | None = None
    """Prometheus metrics on the first sidecar (``enable-metrics``); None: off."""

    @property
    def multi_port(self) -> bool:
        return len(self.services) > 1


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, without the ABC's check for the usual dict."""
    return type(value) is dict or isinstance(value, Mapping)


def pod_annotations(pod: Mapping[str, Any]) -> Mapping[str, object]:
    """``metadata.annotations`` of a pod (empty when absent)."""
    metadata = pod.get("metadata") or {}
    if not _is_mapping(metadata):
        raise InvalidPod("pod metadata: expected a mapping")
    annotations = metadata.get("annotations") or {}
    if not _is_mapping(annotations):
        raise InvalidPod("pod metadata.annotations: expected a mapping")
    return annotations


def app_containers(pod: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    """``spec.containers`` of a pod; refuses a pod without any."""
    spec = pod.get("spec")
    containers = spec.get("containers") if _is_mapping(spec) else None
    if not isinstance(containers, list) or not containers:
        raise InvalidPod("pod spec.containers: expected a non-empty list of containers")
    seen: set[str] = set()
    for container in containers:
        if not _is_mapping(container) or not isinstance(container.get("name"), str):
            raise InvalidPod("pod spec.containers: every container needs a name")
        name = container["name"]
        if name in seen:  # Kubernetes refuses such a pod too ("Duplicate value")
            raise InvalidPod(f"pod spec.containers: two containers are named {name!r}")
        seen.add(name)
    return containers


def plan_workload(
    pod: Mapping[str, Any], namespace: NamespaceInfo, settings: InjectSettings
) -> WorkloadPlan:
    """The plan of a pod that is to be injected (``decide_injection`` says whether)."""
    annotations = pod_annotations(pod)
    containers = app_containers(pod)
    reasons: list[str] = []

    services = _plan_services(annotations, containers, settings)
    upstream_text = ann.text(annotations, ann.CONNECT_SERVICE_UPSTREAMS)
    upstreams = parse_upstreams(upstream_text, settings.namespaces.enabled) if upstream_text else ()

    tproxy, why = _transparent_proxy(annotations, namespace, settings)
    reasons.append(why)
    if tproxy and len(services) > 1:
        raise InjectionRefused(
            ann.CONNECT_SERVICE,
            ann.text(annotations, ann.CONNECT_SERVICE),
            f"multi-port pods ({len(services)} services) cannot use transparent proxy, "
            f'but {why}; set {ann.TRANSPARENT_PROXY}: "false"',
        )
    if tproxy:
        _refuse_pod_security(namespace, why)
    # Planned even without transparent proxy, so bad exclusions are refused either way.
    redirect = plan_redirect(
        annotations,
        PROXY_UID,
        services[0].proxy_port,
        settings.dns.proxy_port if settings.dns.redirection else None,
    )

    overwrite_text = ann.text(annotations, ann.OVERWRITE_PROBES)
    overwrite = (
        ann.parse_bool(ann.OVERWRITE_PROBES, overwrite_text)
        if overwrite_text is not None
        else settings.transparent_proxy.overwrite_probes
    )
    overwrite = overwrite and tproxy
    expose_paths: tuple[ExposedProbe, ...] = ()
    if overwrite:
        expose_paths, notes = plan_expose_paths(containers)
        reasons.extend(notes)
        if expose_paths:
            reasons.append(f"{len(expose_paths)} HTTP probe(s) moved to the sidecar")

    metrics, notes = plan_metrics(annotations, services[0].port, settings.metrics)
    reasons.extend(notes)
    scrape = (metrics.scrape_port,) if metrics is not None else ()
    redirect = exclude_inbound(redirect, tuple(p.listener_port for p in expose_paths) + scrape)

    extra_text = ann.text(annotations, ann.ENVOY_EXTRA_ARGS)
    extra_args = (
        ann.parse_args(ann.ENVOY_EXTRA_ARGS, extra_text)
        if extra_text is not None
        else settings.envoy_extra_args
    )
    return WorkloadPlan(
        services=services,
        upstreams=upstreams,
        transparent_proxy=tproxy,
        redirect=redirect if tproxy else None,
        overwrite_probes=overwrite,
        expose_paths=expose_paths,
        envoy_extra_args=extra_args,
        consul_namespace=settings.namespaces.consul_namespace(namespace.name),
        sidecar_resources=_sidecar_resources(annotations, settings.sidecar_resources),
        reasons=tuple(reasons),
        metrics=metrics,
    )


def _plan_services(
    annotations: Mapping[str, object],
    containers: Sequence[Mapping[str, Any]],
    settings: InjectSettings,
) -> tuple[ServicePlan, ...]:
    names_text = ann.text(annotations, ann.CONNECT_SERVICE)
    ports_text = ann.text(annotations, ann.CONNECT_SERVICE_PORT)
    if names_text is not None:
        names = tuple(
            ann.parse_name(ann.CONNECT_SERVICE, names_text, n) for n in ann.split_list(names_text)
        )
        if not names:
            raise InjectionRefused(ann.CONNECT_SERVICE, names_text, "no service name given")
        if len(set(names)) != len(names):
            raise InjectionRefused(ann.CONNECT_SERVICE, names_text, "a service is listed twice")
    else:
        names = (str(containers[0]["name"]),)

    if ports_text is not None:
        port_items = ann.split_list(ports_text)
        if len(port_items) != len(names):
            raise InjectionRefused(
                ann.CONNECT_SERVICE_PORT,
                ports_text,
                f"lists {len(port_items)} port(s) for {len(names)} service(s) in "
                f"{ann.CONNECT_SERVICE}: give one port per service, in the same order",
            )
        ports: tuple[int | None, ...] = tuple(
            _resolve_service_port(ports_text, item, containers) for item in port_items
        )
    elif len(names) > 1:
        raise InjectionRefused(
            ann.CONNECT_SERVICE,
            names_text,
            f"a multi-port pod needs {ann.CONNECT_SERVICE_PORT} with one port per service",
        )
    else:
        ports = (_first_declared_port(containers),)

    protocol_text = ann.text(annotations, ann.CONNECT_SERVICE_PROTOCOL)
    protocol = (
        ann.parse_protocol(ann.CONNECT_SERVICE_PROTOCOL, protocol_text)
        if protocol_text is not None
        else settings.default_protocol
    )
    tags_text = ann.text(annotations, ann.SERVICE_TAGS)
    tags = ann.split_list(tags_text) if tags_text else ()
    meta = ann.service_meta(annotations)
    multi = len(names) > 1
    return tuple(
        ServicePlan(
            name=name,
            port=port,
            protocol=protocol,
            tags=tags,
            meta=meta,
            proxy_port=FIRST_PROXY_PORT + index,
            suffix=f"-{name}" if multi else "",
        )
        for index, (name, port) in enumerate(zip(names, ports, strict=True))
    )


def _resolve_service_port(value: str, item: str, containers: Sequence[Mapping[str, Any]]) -> int:
    if item.isdigit():
        return ann.parse_port(ann.CONNECT_SERVICE_PORT, value, item)
    for container in containers:
        for declared in container.get("ports") or ():
            if _is_mapping(declared) and declared.get("name") == item:
                number = declared.get("containerPort")
                if isinstance(number, int):
                    return number
    raise InjectionRefused(
        ann.CONNECT_SERVICE_PORT,
        value,
        f"{item!r} is neither a port number nor the name of a container port",
    )


def _first_declared_port(containers: Sequence[Mapping[str, Any]]) -> int | None:
    for container in containers:
        for declared in container.get("ports") or ():
            if _is_mapping(declared) and isinstance(declared.get("containerPort"), int):
                return int(declared["containerPort"])
    return None


def _transparent_proxy(
    annotations: Mapping[str, object], namespace: NamespaceInfo, settings: InjectSettings
) -> tuple[bool, str]:
    value = ann.text(annotations, ann.TRANSPARENT_PROXY)
    if value is not None:
        enabled = ann.parse_bool(ann.TRANSPARENT_PROXY, value)
        return enabled, f"transparent proxy is {_on(enabled)} by annotation {ann.TRANSPARENT_PROXY}"
    label = namespace.labels.get(ann.NAMESPACE_TRANSPARENT_PROXY_LABEL)
    if label is not None:
        enabled = ann.parse_bool(f"namespace {namespace.name} label {ann.TRANSPARENT_PROXY}", label)
        return enabled, f"transparent proxy is {_on(enabled)} by namespace label"
    enabled = settings.transparent_proxy.enabled
    return enabled, f"transparent proxy is {_on(enabled)} by cluster default"


POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
"""The namespace label of Kubernetes' PodSecurity admission; ``baseline`` and ``restricted``
forbid the ``NET_ADMIN`` capability connect-init needs for transparent proxy."""


def _refuse_pod_security(namespace: NamespaceInfo, why: str) -> None:
    level = namespace.labels.get(POD_SECURITY_ENFORCE)
    if level not in ("baseline", "restricted"):
        return
    raise InjectionRefused(
        f"namespace {namespace.name} label {POD_SECURITY_ENFORCE}",
        level,
        f"PodSecurity {level!r} forbids the NET_ADMIN capability connect-init needs to redirect "
        f'traffic, but {why}; set {ann.TRANSPARENT_PROXY}: "false" on the pod (or label the '
        f"namespace {ann.NAMESPACE_TRANSPARENT_PROXY_LABEL}=false), or label it "
        f"{POD_SECURITY_ENFORCE}=privileged",
    )


def _on(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


def _sidecar_resources(
    annotations: Mapping[str, object], defaults: ContainerResources
) -> ContainerResources:
    fields = {
        "cpu_limit": ann.SIDECAR_CPU_LIMIT,
        "cpu_request": ann.SIDECAR_CPU_REQUEST,
        "memory_limit": ann.SIDECAR_MEMORY_LIMIT,
        "memory_request": ann.SIDECAR_MEMORY_REQUEST,
    }
    values = {}
    for attr, key in fields.items():
        value = ann.text(annotations, key)
        if value is not None:
            values[attr] = ann.parse_quantity(key, value)
    return ContainerResources(**{**vars(defaults), **values}) if values else defaults
