"""Config entries: the strict decoder from Consul's JSON to the typed records of each kind.

Kinds: ``service-defaults``, ``proxy-defaults`` (name ``global``), ``service-intentions``,
``mesh`` (name ``mesh``), ``service-resolver`` (decoded by ``loom.domain.resolver``) and
Loom's ``external-service`` (hosts outside the mesh that get virtual IPs,
Istio-ServiceEntry-like). Unknown fields are rejected, as Consul does, so a typo never
silently does nothing. The records are in ``loom.domain.entries``.
"""

from __future__ import annotations

from typing import Any

from loom.domain.entries import (
    EXTERNAL_SERVICE,
    KINDS,
    MESH,
    PROXY_DEFAULTS,
    SERVICE_DEFAULTS,
    SERVICE_INTENTIONS,
    SERVICE_RESOLVER,
    ConfigEntry,
    ExternalPort,
    ExternalService,
    HeaderMatch,
    HttpMatch,
    IntentionPermission,
    IntentionSource,
    MeshConfig,
    ProxyDefaults,
    ServiceDefaults,
    ServiceIntentions,
    entry_key,
)
from loom.domain.fields import (
    Fields,
    ValidationError,
    check_name,
    check_namespace,
)
from loom.domain.intentions import ALLOW, DENY
from loom.domain.proxies import mesh_gateway_mode
from loom.domain.records import TransparentProxySettings
from loom.domain.resolver import FIELDS as RESOLVER_FIELDS
from loom.domain.resolver import decode_resolver

__all__ = [
    "EXTERNAL_SERVICE", "KINDS", "MESH", "PROXY_DEFAULTS", "SERVICE_DEFAULTS",
    "SERVICE_INTENTIONS", "SERVICE_RESOLVER", "entry_key", "validate_entry", "validate_source",
]  # fmt: skip

PROTOCOLS = ("", "tcp", "http", "http2", "grpc")
MTLS_MODES = ("", "strict", "permissive")
COMMON = ("Kind", "Name", "Namespace", "Meta", "CreateIndex", "ModifyIndex", "Partition")


def _tproxy(f: Fields | None) -> TransparentProxySettings:
    if f is None:
        return TransparentProxySettings()
    f.only(("OutboundListenerPort", "DialedDirectly"))
    return TransparentProxySettings(f.port("OutboundListenerPort"), f.flag("DialedDirectly"))


def _opt_text(f: Fields, key: str) -> str | None:
    return f.text(key) if f.has(key) else None


def _http_match(f: Fields) -> HttpMatch:
    f.only(("PathExact", "PathPrefix", "PathRegex", "Methods", "Header"))
    paths = [k for k in ("PathExact", "PathPrefix", "PathRegex") if f.has(k)]
    if len(paths) > 1:
        raise ValidationError(f"{f.path}: set at most one of PathExact, PathPrefix, PathRegex")
    headers = []
    for h in f.subs("Header"):
        h.only(("Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert"))
        headers.append(
            HeaderMatch(
                name=h.text("Name", required=True),
                exact=_opt_text(h, "Exact"),
                prefix=_opt_text(h, "Prefix"),
                suffix=_opt_text(h, "Suffix"),
                regex=_opt_text(h, "Regex"),
                present=h.flag("Present") if h.has("Present") else None,
                invert=h.flag("Invert") if h.has("Invert") else None,
            )
        )
    return HttpMatch(
        path_exact=_opt_text(f, "PathExact"),
        path_prefix=_opt_text(f, "PathPrefix"),
        path_regex=_opt_text(f, "PathRegex"),
        methods=tuple(m.upper() for m in f.strs("Methods")),
        headers=tuple(headers),
    )


def _source(f: Fields) -> IntentionSource:
    f.only(
        (
            "Name", "Namespace", "Peer", "Partition", "Action", "Permissions", "Description",
            "Precedence", "Type", "LegacyID", "LegacyMeta", "LegacyCreateTime", "LegacyUpdateTime",
        )
    )  # fmt: skip
    perms = []
    for p in f.subs("Permissions"):
        p.only(("Action", "HTTP"))
        http = p.sub("HTTP")
        if http is None:
            raise ValidationError(f"{p.where('HTTP')}: is required in a permission")
        perms.append(IntentionPermission(p.one_of("Action", (ALLOW, DENY)), _http_match(http)))
    action = f.text("Action")
    if perms and action:
        raise ValidationError(f"{f.where('Action')}: set either Action or Permissions, not both")
    if not perms:
        action = f.one_of("Action", (ALLOW, DENY))
    return IntentionSource(
        name=check_name(f.text("Name", required=True), f.where("Name"), wildcard=True),
        namespace=check_namespace(
            f.text("Namespace", "default") or "default", f.where("Namespace"), wildcard=True
        ),
        action=action,
        description=f.text("Description"),
        permissions=tuple(perms),
    )


def validate_source(body: Any, where: str) -> IntentionSource:
    """Decode one intention source as if it stood at ``where`` (``Sources[2]``) of an entry:
    the legacy intention endpoints add sources one at a time."""
    return _source(Fields(body, where))


def _external_hosts(f: Fields) -> list[str]:
    hosts = f.strs("Hosts")
    if not hosts:
        raise ValidationError(f"{f.where('Hosts')}: at least one host is required")
    for i, host in enumerate(hosts):
        bare = host[2:] if host.startswith("*.") else host
        labels = bare.split(".")
        if (
            not bare
            or any(not lbl or len(lbl) > 63 for lbl in labels)
            or not all(c.isalnum() or c == "-" for lbl in labels for c in lbl)
        ):
            raise ValidationError(f"{f.where('Hosts')}[{i}]: {host!r} is not a host name")
    return [h.lower() for h in hosts]


def validate_entry(body: Any) -> ConfigEntry:
    """Decode a config entry of any kind from Consul's JSON, strictly (the bad field named)."""
    f = Fields(body, "")
    if not f.text("Kind"):
        raise ValidationError("Kind: is required (one of " + ", ".join(KINDS) + ")")
    kind = f.one_of("Kind", KINDS)
    name = f.text("Name", required=True)
    ns = check_namespace(f.text("Namespace", "default") or "default", "Namespace")
    meta = f.str_map("Meta")
    if kind == SERVICE_DEFAULTS:
        f.only((*COMMON, "Protocol", "MutualTLSMode", "Mode", "TransparentProxy", "MeshGateway"))
        check_name(name, "Name")
        return ServiceDefaults(
            name=name,
            namespace=ns,
            meta=meta,
            protocol=f.one_of("Protocol", PROTOCOLS),
            mutual_tls_mode=f.one_of("MutualTLSMode", MTLS_MODES),
            mode=f.one_of("Mode", ("", "direct", "transparent")),
            transparent_proxy=_tproxy(f.sub("TransparentProxy")),
            mesh_gateway=mesh_gateway_mode(f),
        )
    if kind == PROXY_DEFAULTS:
        f.only((*COMMON, "Config", "Mode", "TransparentProxy", "MutualTLSMode", "MeshGateway"))
        if name != "global":
            raise ValidationError("Name: a proxy-defaults entry must be named 'global'")
        return ProxyDefaults(
            name=name,
            meta=meta,
            config=f.any_map("Config"),
            mode=f.one_of("Mode", ("", "direct", "transparent")),
            mutual_tls_mode=f.one_of("MutualTLSMode", MTLS_MODES),
            transparent_proxy=_tproxy(f.sub("TransparentProxy")),
            mesh_gateway=mesh_gateway_mode(f),
        )
    if kind == MESH:
        f.only((*COMMON, "TransparentProxy", "AllowEnablingPermissiveMutualTLS"))
        if name != "mesh":
            raise ValidationError("Name: a mesh entry must be named 'mesh'")
        tp = f.sub("TransparentProxy")
        if tp is not None:
            tp.only(("MeshDestinationsOnly",))
        return MeshConfig(
            name=name,
            meta=meta,
            mesh_destinations_only=tp.flag("MeshDestinationsOnly") if tp else False,
            allow_enabling_permissive_mutual_tls=f.flag("AllowEnablingPermissiveMutualTLS", True),
        )
    if kind == SERVICE_INTENTIONS:
        f.only((*COMMON, "Sources"))
        check_name(name, "Name", wildcard=True)
        sources = [_source(s) for s in f.subs("Sources")]
        seen = set()
        for i, s in enumerate(sources):
            if (s.namespace, s.name) in seen:
                raise ValidationError(f"Sources[{i}]: duplicate source {s.name!r}")
            seen.add((s.namespace, s.name))
        return ServiceIntentions(name=name, namespace=ns, meta=meta, sources=tuple(sources))
    if kind == SERVICE_RESOLVER:
        f.only((*COMMON, *RESOLVER_FIELDS))
        return decode_resolver(f, name, ns, meta)
    # external-service
    f.only((*COMMON, "Hosts", "Ports"))
    check_name(name, "Name")
    hosts = _external_hosts(f)
    ports = []
    for p in f.subs("Ports"):
        p.only(("Number", "Protocol", "Name"))
        number = p.port("Number")
        if number == 0:
            raise ValidationError(f"{p.where('Number')}: is required")
        ports.append(ExternalPort(number, p.one_of("Protocol", PROTOCOLS) or "tcp", p.text("Name")))
    if not ports:
        raise ValidationError("Ports: at least one port is required")
    return ExternalService(
        name=name, namespace=ns, meta=meta, hosts=tuple(hosts), ports=tuple(ports)
    )
