"""The endpoints controller's reconcile (pure): which registrations the cluster asks for.

consul-k8s registers injected pods with Consul from a controller; this is Loom's. Given the
Kubernetes Pods, Services and Namespaces (plain JSON dicts) and the controller's own
registrations currently in the catalog, ``reconcile`` returns the agent registrations to
(re)write and the service IDs to deregister. The rules:

- a pod is registered when it carries ``connect-inject-status: injected``, has a pod IP, is not
  terminating (``deletionTimestamp``) nor finished, and its namespace is allowed by the values;
- its plan is ``plan_workload`` of the pod as it was before injection (the ``original-pod``
  annotation the injector wrote; the live pod when absent) and the bodies are
  ``service_registrations`` with the pod IP as address: annotations mean what they mean for
  the webhook;
- the Kubernetes Service named like the Consul service (else the only Service selecting a
  single-service pod) gives ``TaggedAddresses["virtual"]`` = its ClusterIP and port; a headless
  Service gives none;
- readiness: every service and its sidecar carry a static (no TTL) check owned by the
  controller, ``passing`` when the pod's ``Ready`` condition is True, else ``critical``, so an
  unready pod stays registered (connect-init can finish) but gets no traffic;
- a registration whose pod is gone (or no longer eligible) is deregistered; a pod the planner
  refuses keeps what it had and is reported in ``Changes.skipped`` with the reason;
- idempotency: each body carries ``Meta["registration-hash"]``, a digest of the body itself;
  a registration whose hash matches is not rewritten.

When pods log in (``settings.login``), the tokens of a pod whose registrations are removed are
removed too (``login_tokens_of``: the tokens of the auth method whose ``Description`` carries
``{"pod": "<namespace>/<name>"}``, as consul-k8s finds them): a pod that is gone keeps no
identity.

The I/O loop around it is ``loom.k8s.controller_loop``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.acl.binding import login_meta
from loom.inject import InjectError, InjectSettings, NamespaceInfo, decide_injection, plan_workload
from loom.inject import annotations as ann
from loom.inject.registration import (
    META_K8S_NAMESPACE,
    META_MANAGED_BY,
    META_POD_NAME,
    service_registrations,
)

Doc = dict[str, Any]

META_HASH = "registration-hash"
"""Service meta key holding the digest of the registration body (idempotency)."""
CHECK_NAME = "Kubernetes Readiness"
"""Name of the controller's per-service health check."""
CONNECT_PROXY = "connect-proxy"


@dataclass(frozen=True)
class Skipped:
    """A pod the controller could not register, and why (one line)."""

    pod: str
    """``namespace/name``."""
    reason: str


@dataclass(frozen=True)
class Changes:
    """What to write to the catalog to make it match the cluster."""

    register: list[Doc] = field(default_factory=list)
    """``PUT /v1/agent/service/register`` bodies, in pod then plan order."""
    deregister: list[str] = field(default_factory=list)
    """Service IDs to ``PUT /v1/agent/service/deregister/<id>`` (sidecars go with them)."""
    skipped: list[Skipped] = field(default_factory=list)
    """Injected pods left alone because the planner refused them."""

    @property
    def empty(self) -> bool:
        return not self.register and not self.deregister


def reconcile(
    pods: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    registered: Iterable[Mapping[str, Any]],
    settings: InjectSettings,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> Changes:
    """The registrations to write and remove so the catalog matches ``pods``.

    ``registered`` are agent service documents (``GET /v1/agent/services`` values); only the
    controller's own (``Meta["managed-by"]``, not sidecars) are considered.
    ``namespace_labels`` maps a namespace to its labels (transparent-proxy label).
    """
    labels = namespace_labels or {}
    by_ns: dict[str, list[Mapping[str, Any]]] = {}
    for svc in services:
        by_ns.setdefault(_meta(svc).get("namespace") or "default", []).append(svc)
    ours = {
        str(doc["ID"]): doc
        for doc in registered
        if doc.get("Kind") != CONNECT_PROXY
        and (doc.get("Meta") or {}).get(META_MANAGED_BY) == ann.MANAGED_BY_VALUE
    }
    changes = Changes()
    kept: set[str] = set()
    for pod in sorted(pods, key=_pod_key):
        key = _pod_key(pod)
        if not _eligible(pod, settings):
            continue
        try:
            bodies = pod_registrations(pod, by_ns.get(key[0], []), settings, labels)
        except InjectError as exc:
            changes.skipped.append(Skipped(f"{key[0]}/{key[1]}", str(exc)))
            kept |= {sid for sid, doc in ours.items() if _owner(doc) == key}
            continue
        for body in bodies:
            kept.add(body["ID"])
            have = ours.get(body["ID"])
            if have is None or (have.get("Meta") or {}).get(META_HASH) != body["Meta"][META_HASH]:
                changes.register.append(body)
    changes.deregister.extend(sorted(sid for sid in ours if sid not in kept))
    return changes


def pod_registrations(
    pod: Mapping[str, Any],
    services: Sequence[Mapping[str, Any]],
    settings: InjectSettings,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> list[Doc]:
    """The registration bodies of one eligible pod (``InjectError`` when refused)."""
    ns, name = _pod_key(pod)
    plan = plan_workload(_original(pod), NamespaceInfo(ns, namespace_labels.get(ns, {})), settings)
    address = str((pod.get("status") or {}).get("podIP"))
    ready = is_ready(pod)
    pod_labels = _meta(pod).get("labels") or {}
    bodies = service_registrations(plan, name, ns, address)
    for body, service in zip(bodies, plan.services, strict=True):
        k8s_service = _service_for(service.name, services, pod_labels, len(plan.services) == 1)
        virtual = _virtual_address(k8s_service, service.port, pod) if k8s_service else None
        if virtual is not None:
            body["TaggedAddresses"] = {"virtual": virtual}
        check = _check(body["ID"], ready)
        body["Check"] = check
        body["Connect"]["SidecarService"]["Check"] = {
            **check,
            "CheckID": f"{body['ID']}-sidecar-proxy/kubernetes-readiness",
        }
        body["Meta"][META_HASH] = _digest(body)
    return bodies


def is_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's ``Ready`` condition is True."""
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _eligible(pod: Mapping[str, Any], settings: InjectSettings) -> bool:
    meta = _meta(pod)
    status = pod.get("status") or {}
    if (meta.get("annotations") or {}).get(ann.INJECT_STATUS) != ann.INJECT_STATUS_INJECTED:
        return False
    if not status.get("podIP") or meta.get("deletionTimestamp"):
        return False
    if status.get("phase") in ("Succeeded", "Failed"):
        return False
    # The injector's namespace rules (enabled, never-injected, deny and allow lists) decide
    # whether the namespace is ours; the annotation is forced so only those rules count.
    namespace = NamespaceInfo(meta.get("namespace") or "default")
    return decide_injection({ann.CONNECT_INJECT: "true"}, namespace, settings).inject


def _original(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod as it was before injection (``original-pod``), else the pod itself."""
    text = (_meta(pod).get("annotations") or {}).get(ann.ORIGINAL_POD)
    if not isinstance(text, str):
        return pod
    try:
        original = json.loads(text)
    except ValueError:
        raise InjectError(f"annotation {ann.ORIGINAL_POD}: not valid JSON") from None
    if not isinstance(original, dict):
        raise InjectError(f"annotation {ann.ORIGINAL_POD}: expected a JSON object")
    return original


def _service_for(
    name: str,
    services: Sequence[Mapping[str, Any]],
    pod_labels: Mapping[str, str],
    single: bool,
) -> Mapping[str, Any] | None:
    selecting = [s for s in services if _selects(s, pod_labels)]
    for svc in selecting:
        if _meta(svc).get("name") == name:
            return svc
    return selecting[0] if single and len(selecting) == 1 else None


def _selects(svc: Mapping[str, Any], pod_labels: Mapping[str, str]) -> bool:
    selector = (svc.get("spec") or {}).get("selector") or {}
    return bool(selector) and all(pod_labels.get(k) == v for k, v in selector.items())


def _virtual_address(
    svc: Mapping[str, Any], target: int | None, pod: Mapping[str, Any]
) -> Doc | None:
    spec = svc.get("spec") or {}
    cluster_ip = spec.get("clusterIP")
    ports = [p for p in spec.get("ports") or () if isinstance(p, Mapping)]
    if not cluster_ip or cluster_ip == "None" or not ports:
        return None
    chosen = ports[0]
    for port in ports:
        if _target_port(port, pod) == target:
            chosen = port
            break
    return {"Address": str(cluster_ip), "Port": int(chosen.get("port") or 0)}


def _target_port(port: Mapping[str, Any], pod: Mapping[str, Any]) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    for container in (pod.get("spec") or {}).get("containers") or ():
        for declared in container.get("ports") or ():
            if declared.get("name") == target:
                return int(declared.get("containerPort") or 0)
    return None


def _check(service_id: str, ready: bool) -> Doc:
    return {
        "CheckID": f"{service_id}/kubernetes-readiness",
        "Name": CHECK_NAME,
        "Status": "passing" if ready else "critical",
        "Output": "pod is ready" if ready else "pod is not ready (Ready condition is not True)",
        "Notes": "set by loom k8s controller from the pod's Ready condition",
    }


def _digest(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(pod)
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _owner(doc: Mapping[str, Any]) -> tuple[str, str]:
    meta = doc.get("Meta") or {}
    return str(meta.get(META_K8S_NAMESPACE)), str(meta.get(META_POD_NAME))


def owners(registered: Iterable[Mapping[str, Any]], service_ids: Iterable[str]) -> set[str]:
    """``namespace/name`` of the pods owning these registrations."""
    by_id = {str(doc.get("ID")): doc for doc in registered}
    found = set()
    for sid in service_ids:
        doc = by_id.get(sid)
        if doc is not None:
            ns, name = _owner(doc)
            found.add(f"{ns}/{name}")
    return found


def login_tokens_of(
    tokens: Iterable[Mapping[str, Any]], auth_method: str, pods: set[str]
) -> list[str]:
    """AccessorIDs of the tokens ``auth_method`` made for ``pods`` (``namespace/name``)."""
    found = []
    for token in tokens:
        if token.get("AuthMethod") != auth_method:
            continue
        pod = login_meta(str(token.get("Description") or "")).get("pod")
        if pod in pods:
            found.append(str(token.get("AccessorID")))
    return sorted(found)
