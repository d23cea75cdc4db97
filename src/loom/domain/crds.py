"""consul-k8s's custom resources as config entries: the pure conversion both front-ends share.

``consul.hashicorp.com/v1alpha1`` ServiceDefaults, ProxyDefaults, ServiceIntentions (L4 and L7)
and Mesh are how consul-k8s users manage the mesh from kubectl; the Kubernetes controller
(``loom.k8s.crd_controller``) and ``loom local apply -f`` both turn them into the config entries
of ``PUT /v1/config`` with ``to_config_entry``, so a manifest means the same in both places.

The spec's camelCase fields become Consul's PascalCase ones (``pathExact`` -> ``PathExact``,
``http`` -> ``HTTP``, ``tlsMinVersion`` -> ``TLSMinVersion``); opaque maps (ProxyDefaults
``config``, Envoy extension ``arguments``) are passed as written. The entry's name is the
resource's (ServiceIntentions: ``spec.destination.name``; ProxyDefaults and Mesh are
singletons named ``global`` and ``mesh``). Fields Loom does not implement are kept, so the
server refuses them by name rather than the mesh silently ignoring them.

Ownership, as consul-k8s marks it: every entry carries ``Meta`` ``external-source:
kubernetes`` and ``consul.hashicorp.com/source-datacenter``, plus Loom's
``consul.hashicorp.com/source-kube-resource`` naming the resource (``ns/Kind/name``), so two
resources, or a resource and an entry written by hand, never overwrite each other
(``owner_of``). Nothing here does I/O or reads a clock: the time of a status condition is an
argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loom.domain.entries import MESH, PROXY_DEFAULTS, SERVICE_DEFAULTS, SERVICE_INTENTIONS
from loom.domain.fields import ValidationError

GROUP = "consul.hashicorp.com"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = "finalizers.consul.hashicorp.com"
"""consul-k8s's finalizer: the entry is deleted before the resource goes."""
SOURCE_KEY = "external-source"
SOURCE_KUBERNETES = "kubernetes"
DATACENTER_KEY = "consul.hashicorp.com/source-datacenter"
RESOURCE_KEY = "consul.hashicorp.com/source-kube-resource"
SYNCED = "Synced"

# Condition reasons, as consul-k8s's.
REASON_AGENT_ERROR = "ConsulAgentError"
REASON_EXTERNAL = "ExternalConfigEntry"
REASON_INVALID = "InvalidResource"


class CrdError(ValidationError):
    """A resource that cannot become a config entry; the message names the field."""


@dataclass(frozen=True)
class CrdKind:
    """One custom resource kind and the config entry kind it becomes."""

    kind: str
    """The resource's ``kind`` (``ServiceDefaults``)."""
    plural: str
    """Its REST resource name (``servicedefaults``)."""
    short_name: str
    """The kubectl short name consul-k8s gives it (``service-defaults``); empty: none."""
    entry_kind: str
    """The config entry ``Kind`` (``service-defaults``)."""
    singleton: str | None = None
    """The one name the entry (and the resource) must have; None: the resource's name."""


CRD_KINDS: dict[str, CrdKind] = {
    k.kind: k
    for k in (
        CrdKind("ServiceDefaults", "servicedefaults", "service-defaults", SERVICE_DEFAULTS),
        CrdKind("ProxyDefaults", "proxydefaults", "proxy-defaults", PROXY_DEFAULTS, "global"),
        CrdKind("ServiceIntentions", "serviceintentions", "service-intentions", SERVICE_INTENTIONS),
        CrdKind("Mesh", "meshes", "", MESH, "mesh"),
    )
}

OPAQUE = frozenset({"config", "arguments"})
"""Spec keys whose values are free-form maps, passed to the entry as written."""
UPPER = {"http": "HTTP", "tls": "TLS", "jwt": "JWT"}


def consul_key(key: str) -> str:
    """``pathExact`` -> ``PathExact``, ``http`` -> ``HTTP``, ``tlsMinVersion`` ->
    ``TLSMinVersion``."""
    if key in UPPER:
        return UPPER[key]
    for prefix, upper in UPPER.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            return upper + key[len(prefix) :]
    return key[:1].upper() + key[1:]


def _convert(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CrdError(f"{path}: keys must be strings")
            where = f"{path}.{key}"
            out[consul_key(key)] = item if key in OPAQUE else _convert(item, where)
        return out
    if isinstance(value, list):
        return [_convert(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def crd_kind(resource: Mapping[str, Any]) -> CrdKind:
    """The kind of ``resource``; refuses anything but the four consul.hashicorp.com kinds."""
    if resource.get("apiVersion") != API_VERSION:
        raise CrdError(f"apiVersion: {resource.get('apiVersion')!r} is not {API_VERSION}")
    kind = resource.get("kind")
    if not isinstance(kind, str) or kind not in CRD_KINDS:
        raise CrdError(f"kind: {kind!r} is not one of {', '.join(CRD_KINDS)}")
    return CRD_KINDS[kind]


def resource_id(resource: Mapping[str, Any]) -> str:
    """``namespace/Kind/name`` of a resource (the owner mark of its entry)."""
    meta = resource.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{resource.get('kind')}/{meta.get('name')}"


def to_config_entry(
    resource: Mapping[str, Any], datacenter: str, consul_namespace: str | None = None
) -> dict[str, Any]:
    """The config entry (Consul JSON) ``resource`` asks for, marked as made from it.

    ``consul_namespace`` is the Consul namespace of the entry (None: the default one, omitted);
    a ServiceIntentions' ``spec.destination.namespace`` overrides it."""
    kind = crd_kind(resource)
    meta = resource.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise CrdError("metadata.name: is required")
    spec = resource.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise CrdError("spec: expected an object")
    name: str = meta["name"]
    if kind.singleton is not None and name != kind.singleton:
        raise CrdError(
            f"metadata.name: a {kind.kind} resource must be named {kind.singleton!r}, not {name!r}"
        )
    body = dict(spec)
    namespace = consul_namespace
    if kind.kind == "ServiceIntentions":
        destination = body.pop("destination", None)
        if not isinstance(destination, Mapping) or not destination.get("name"):
            raise CrdError("spec.destination.name: is required")
        name = str(destination["name"])
        if destination.get("namespace"):
            namespace = str(destination["namespace"])
    entry: dict[str, Any] = {"Kind": kind.entry_kind, "Name": name, **_convert(body, "spec")}
    if namespace is not None:
        entry["Namespace"] = namespace
    entry["Meta"] = {
        SOURCE_KEY: SOURCE_KUBERNETES,
        DATACENTER_KEY: datacenter,
        RESOURCE_KEY: resource_id(resource),
    }
    return entry


def entry_path(entry: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """``/v1/config/KIND/NAME`` and its query parameters for ``entry``."""
    params = {"ns": str(entry["Namespace"])} if entry.get("Namespace") else {}
    return f"/v1/config/{entry['Kind']}/{entry['Name']}", params


def owner_of(entry: Mapping[str, Any] | None) -> str | None:
    """The resource that made the stored ``entry`` (``ns/Kind/name``); None when it was not
    made from a resource (written by hand, or by another tool)."""
    if entry is None:
        return None
    meta = entry.get("Meta") or {}
    if not isinstance(meta, Mapping) or meta.get(SOURCE_KEY) != SOURCE_KUBERNETES:
        return None
    owner = meta.get(RESOURCE_KEY)
    return str(owner) if owner else None


def may_write(
    current: Mapping[str, Any] | None, resource: Mapping[str, Any], datacenter: str
) -> str | None:
    """None when the resource may write the entry (absent, or made by this resource in this
    datacenter); else why not, for the ``Synced=False`` condition."""
    if current is None:
        return None
    mine = resource_id(resource)
    owner = owner_of(current)
    meta = current.get("Meta") or {}
    if owner == mine and meta.get(DATACENTER_KEY) == datacenter:
        return None
    made_by = f"resource {owner}" if owner else "something other than a Kubernetes resource"
    return (
        f"config entry {current.get('Kind')}/{current.get('Name')} already exists in Loom, "
        f"made by {made_by}; it is left alone"
    )


def synced_status(
    previous: Mapping[str, Any] | None, ok: bool, reason: str, message: str, now: str
) -> dict[str, Any]:
    """The resource's ``status`` after a sync attempt at ``now`` (RFC 3339): the ``Synced``
    condition (its ``lastTransitionTime`` kept while its status does not change) and, on
    success, ``lastSyncedTime``."""
    previous = previous or {}
    old = next(
        (c for c in previous.get("conditions") or () if isinstance(c, Mapping)
         and c.get("type") == SYNCED),
        None,
    )  # fmt: skip
    status = "True" if ok else "False"
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    condition: dict[str, Any] = {
        "type": SYNCED,
        "status": status,
        "lastTransitionTime": since or now,
    }
    if not ok:
        condition.update(reason=reason, message=message)
    out: dict[str, Any] = {"conditions": [condition]}
    synced = now if ok else previous.get("lastSyncedTime")
    if synced:
        out["lastSyncedTime"] = synced
    return out


def same_status(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    """Whether two statuses say the same, times of a still-true sync aside (no write then)."""
    if a is None:
        return False

    def key(s: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
            for c in s.get("conditions") or ()
            if isinstance(c, Mapping)
        ]

    return key(a) == key(b)
