"""Kubernetes manifests for ``loom local apply -f``: read, checked and expanded (pure).

``parse_documents`` turns the text of one ``-f`` source (multi-document YAML, or JSON, a
``List`` of items included) into ``KubeObject``s; ``expand`` checks the whole set and expands
the workloads (Deployment, ReplicaSet, StatefulSet) into the pods Kubernetes would make, named
as Kubernetes names them (``<deployment>-<template hash>-<5>``, ``<replicaset>-<5>``,
``<statefulset>-<ordinal>``). The names are derived from the pod template, so applying the same
file again gives the same pods and a changed template gives new ones (the rolling change).
The mesh CRDs (ServiceIntentions, ServiceDefaults, ProxyDefaults) become config entries. Every
refusal is one ``ManifestError`` line naming the object (``Kind/name`` and its source). No I/O
here: the caller reads the files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from loom.domain.crds import CrdError, to_config_entry
from loom.local.errors import ManifestError

CORE_KINDS = ("Namespace", "ServiceAccount", "Secret", "ConfigMap", "Service", "Pod")
WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")
LOCAL_DATACENTER = "dc1"
"""The local mesh's default datacenter (its server's default), marked on the entries CRDs
make (a mesh of another datacenter marks its own)."""
CRD_KINDS = {
    "ServiceIntentions": "service-intentions",
    "ServiceDefaults": "service-defaults",
    "ProxyDefaults": "proxy-defaults",
}
"""The consul.hashicorp.com/v1alpha1 kinds and the config-entry kind each stands for."""
CRD_GROUP = "consul.hashicorp.com/"
KINDS = CORE_KINDS + WORKLOAD_KINDS + tuple(CRD_KINDS)
APPLY_ORDER = {kind: n for n, kind in enumerate(KINDS)}
"""Namespaces first, then what pods need (accounts, secrets, config maps), then pods."""
TEMPLATE_HASH_LABEL = "pod-template-hash"

_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet
POD_NAME_MAX = 40
"""Longest pod name the local mesh takes (its namespace and file names carry it)."""


@dataclass(frozen=True)
class KubeObject:
    """One document of a manifest."""

    kind: str
    namespace: str
    """``metadata.namespace`` (``default``); ``""`` for the cluster-scoped Namespace."""
    name: str
    body: Mapping[str, Any]
    """The document as read."""
    source: str
    """Where it came from (``file.yaml #2``), for error messages."""

    @property
    def key(self) -> str:
        """``Kind/namespace/name``: unique in a manifest set and in the applied state."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        """What kubectl prints: ``deployment.apps/web``, ``service/web``."""
        group = {"Deployment": ".apps", "ReplicaSet": ".apps", "StatefulSet": ".apps"}
        group.update({k: ".consul.hashicorp.com" for k in CRD_KINDS})
        return f"{self.kind.lower()}{group.get(self.kind, '')}/{self.name}"

    def digest(self) -> str:
        """Canonical hash of the document: equal documents are unchanged on re-apply."""
        return _digest(self.body)

    def fail(self, why: str) -> ManifestError:
        return ManifestError(f"{self.kind}/{self.name} ({self.source}): {why}")


@dataclass(frozen=True)
class DesiredPod:
    """A pod the manifest set asks for, before injection."""

    name: str
    namespace: str
    owner: str | None
    """The workload's key (``Deployment/default/web``); None for a bare Pod."""
    pod: Mapping[str, Any]
    """A complete Pod object (apiVersion, kind, metadata with labels and owner, spec)."""

    def digest(self) -> str:
        return _digest(self.pod)

    @property
    def service_account(self) -> str:
        spec = self.pod.get("spec") or {}
        return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


@dataclass(frozen=True)
class ManifestSet:
    """The checked objects of one apply, in apply order, and the pods they make."""

    objects: tuple[KubeObject, ...]
    pods: tuple[DesiredPod, ...]

    def of_kind(self, kind: str) -> list[KubeObject]:
        return [o for o in self.objects if o.kind == kind]


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _safe(hex_digest: str, n: int) -> str:
    return "".join(_SAFE[int(hex_digest[2 * i : 2 * i + 2], 16) % len(_SAFE)] for i in range(n))


def parse_documents(text: str, source: str) -> list[KubeObject]:
    """The objects of one source; empty documents are skipped, ``List`` items unpacked."""
    try:
        if text.lstrip().startswith(("{", "[")):
            loaded = json.loads(text)
            docs: list[Any] = loaded if isinstance(loaded, list) else [loaded]
        else:
            docs = list(yaml.safe_load_all(text))
    except (yaml.YAMLError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ManifestError(f"{source}: not YAML or JSON: {first}") from exc
    out: list[KubeObject] = []
    for n, doc in enumerate(docs, start=1):
        where = f"{source} #{n}" if len(docs) > 1 else source
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            for m, item in enumerate(doc.get("items") or [], start=1):
                out.append(_object(item, f"{where} item {m}"))
            continue
        out.append(_object(doc, where))
    return out


def _object(doc: Any, where: str) -> KubeObject:
    if not isinstance(doc, Mapping):
        raise ManifestError(f"{where}: expected a Kubernetes object (a mapping)")
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(f"{where}: the object has no kind")
    if not isinstance(api, str) or not api:
        raise ManifestError(f"{where}: {kind} has no apiVersion")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where}: {kind} has no metadata.name")
    if kind not in KINDS:
        raise ManifestError(
            f"{kind}/{name} ({where}): kind {kind} ({api}) is not one loom local apply knows "
            f"(it takes {', '.join(KINDS)})"
        )
    if (kind in CRD_KINDS) != api.startswith(CRD_GROUP):
        raise ManifestError(f"{kind}/{name} ({where}): apiVersion {api} does not serve {kind}")
    if not _DNS1123.fullmatch(name) or len(name) > 253:
        raise ManifestError(f"{kind}/{name} ({where}): metadata.name is not a DNS-1123 name")
    assert isinstance(meta, Mapping)
    ns = meta.get("namespace") or "default"
    if not isinstance(ns, str) or not _DNS1123.fullmatch(ns):
        raise ManifestError(f"{kind}/{name} ({where}): metadata.namespace {ns!r} is not a name")
    return KubeObject(kind, "" if kind == "Namespace" else ns, name, doc, where)


def expand(objects: Iterable[KubeObject]) -> ManifestSet:
    """Check the set (no object twice, workloads and Services well formed) and list the
    pods it makes. Cross-object checks that need the applied state are ``apply``'s."""
    seen: dict[str, KubeObject] = {}
    for obj in objects:
        if obj.key in seen:
            raise obj.fail(f"defined twice (also in {seen[obj.key].source})")
        seen[obj.key] = obj
    ordered = tuple(sorted(seen.values(), key=lambda o: APPLY_ORDER[o.kind]))
    pods: list[DesiredPod] = []
    names: dict[str, KubeObject] = {}
    for obj in ordered:
        if obj.kind == "Service":
            service_ports(obj)
        elif obj.kind in CRD_KINDS:
            config_entry(obj)
        made = workload_pods(obj) if obj.kind in WORKLOAD_KINDS or obj.kind == "Pod" else []
        for pod in made:
            if pod.name in names:
                raise obj.fail(f"pod {pod.name} is also made by {names[pod.name].ref}")
            names[pod.name] = obj
        pods.extend(made)
    return ManifestSet(ordered, tuple(pods))


def _spec(obj: KubeObject) -> Mapping[str, Any]:
    spec = obj.body.get("spec")
    if not isinstance(spec, Mapping):
        raise obj.fail("spec: expected a mapping")
    return spec


def workload_pods(obj: KubeObject) -> list[DesiredPod]:
    """The pods of a Pod or workload object, named as Kubernetes names them."""
    if obj.kind == "Pod":
        _containers(obj, _spec(obj), "spec")
        pod = {**obj.body, "apiVersion": "v1", "kind": "Pod"}
        pod["metadata"] = {**obj.body["metadata"], "namespace": obj.namespace}
        return [_named(obj, pod, obj.name, None)]
    spec = _spec(obj)
    template = spec.get("template")
    if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
        raise obj.fail("spec.template.spec: expected a pod template")
    _containers(obj, template["spec"], "spec.template.spec")
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise obj.fail(f"spec.replicas {replicas!r}: expected a whole number >= 0")
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not isinstance(selector, Mapping) or not selector:
        raise obj.fail("spec.selector.matchLabels: expected the labels that select its pods")
    for key, value in selector.items():
        if labels.get(key) != value:
            raise obj.fail(
                f"spec.selector.matchLabels {key}={value} does not match the template's labels"
            )
    digest = _digest(template)
    out = []
    for index in range(replicas):
        if obj.kind == "StatefulSet":
            name = f"{obj.name}-{index}"
            extra = {"statefulset.kubernetes.io/pod-name": name}
        elif obj.kind == "Deployment":
            hash10 = _safe(digest, 10)
            name = f"{obj.name}-{hash10}-{_safe(_digest([digest, index]), 5)}"
            extra = {TEMPLATE_HASH_LABEL: hash10}
        else:
            name = f"{obj.name}-{_safe(_digest([digest, index]), 5)}"
            extra = {}
        meta = {
            **{k: v for k, v in tmeta.items() if k != "name"},
            "name": name,
            "namespace": obj.namespace,
            "labels": {**labels, **extra},
            "ownerReferences": [
                {"apiVersion": obj.body["apiVersion"], "kind": obj.kind, "name": obj.name}
            ],
        }
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}
        out.append(_named(obj, pod, name, obj.key))
    return out


def _named(obj: KubeObject, pod: dict[str, Any], name: str, owner: str | None) -> DesiredPod:
    if len(name) > POD_NAME_MAX:
        raise obj.fail(
            f"its pod name {name} is longer than the {POD_NAME_MAX} characters loom local takes"
        )
    return DesiredPod(name, obj.namespace, owner, pod)


def _containers(obj: KubeObject, spec: Mapping[str, Any], where: str) -> None:
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise obj.fail(f"{where}.containers: expected a non-empty list")
    names = set()
    for c in containers:
        if not isinstance(c, Mapping) or not isinstance(c.get("name"), str):
            raise obj.fail(f"{where}.containers: every container needs a name")
        if not isinstance(c.get("image"), str) or not c["image"]:
            raise obj.fail(f"container {c['name']}: no image")
        if c["name"] in names:
            raise obj.fail(f"{where}.containers: {c['name']} is listed twice")
        names.add(c["name"])
        for field in ("command", "args"):
            value = c.get(field)
            if value is not None and not (
                isinstance(value, list) and all(isinstance(v, str | int | float) for v in value)
            ):
                raise obj.fail(f"container {c['name']}: {field} must be a list of strings")


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service: its number and the pod port it targets (number or name)."""

    name: str
    port: int
    target: int | str
    protocol: str


def service_ports(obj: KubeObject) -> list[ServicePort]:
    spec = _spec(obj)
    out = []
    for n, item in enumerate(spec.get("ports") or []):
        if not isinstance(item, Mapping) or not isinstance(item.get("port"), int):
            raise obj.fail(f"spec.ports[{n}]: expected a port number")
        target = item.get("targetPort", item["port"])
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if not isinstance(target, int | str) or isinstance(target, bool):
            raise obj.fail(f"spec.ports[{n}].targetPort {target!r}: a number or a port name")
        out.append(ServicePort(str(item.get("name") or ""), int(item["port"]), target,
                               str(item.get("protocol") or "TCP")))  # fmt: skip
    if spec.get("clusterIP") != "None" and not out:
        raise obj.fail("spec.ports: a ClusterIP Service needs at least one port")
    return out


def is_headless(obj: KubeObject) -> bool:
    return _spec(obj).get("clusterIP") == "None"


def selects(service: KubeObject, pod: DesiredPod) -> bool:
    """Whether the Service's selector picks the pod (same namespace, every label equal)."""
    selector = _spec(service).get("selector") or {}
    labels = (pod.pod.get("metadata") or {}).get("labels") or {}
    return (
        bool(selector)
        and pod.namespace == service.namespace
        and all(labels.get(k) == v for k, v in selector.items())
    )


def target_port(port: ServicePort, pod: Mapping[str, Any]) -> int | None:
    """The pod port a Service port reaches: the number, or the container port so named."""
    if isinstance(port.target, int):
        return port.target
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == port.target:
                return int(declared["containerPort"])
    return None


def config_entry(obj: KubeObject, datacenter: str = LOCAL_DATACENTER) -> dict[str, Any]:
    """The config entry a mesh CRD stands for, as ``PUT /v1/config`` takes it: the same
    conversion the Kubernetes CRD controller makes (``loom.domain.crds``), checked here
    first so a bad source is refused before anything is applied."""
    spec = _spec(obj)
    if obj.kind == "ServiceIntentions":
        sources = spec.get("sources")
        if not isinstance(sources, list) or not sources:
            raise obj.fail("spec.sources: expected at least one source")
        for n, src in enumerate(sources):
            if not isinstance(src, Mapping) or not isinstance(src.get("name"), str):
                raise obj.fail(f"spec.sources[{n}].name: expected a service name")
            if "action" in src and src["action"] not in ("allow", "deny"):
                raise obj.fail(f"spec.sources[{n}].action {src['action']!r}: allow or deny")
    try:
        return to_config_entry(obj.body, datacenter)
    except CrdError as exc:
        raise obj.fail(str(exc)) from None


def manifest_of(objects: Sequence[KubeObject]) -> str:
    """The objects as one multi-document YAML text (what ``delete -f`` is given back)."""
    return "---\n".join(yaml.safe_dump(dict(o.body), sort_keys=False) for o in objects)
