"""The stored form of config entries (table ``config``): typed records <-> documents on disk.

Only ``loom.store.tables`` uses this (it names the codec of every table). The documents are
exactly those stored when entries were validated dicts: Consul's JSON of the entry plus
``CreateIndex``/``ModifyIndex``, with an intention's ``Permissions`` and the parts of its
``HTTP`` block present only when given (a test re-encodes rows the old code wrote).
"""

from __future__ import annotations

from typing import Any

from loom.domain.entries import (
    EXTERNAL_SERVICE,
    MESH,
    PROXY_DEFAULTS,
    SERVICE_DEFAULTS,
    SERVICE_INTENTIONS,
    SERVICE_RESOLVER,
    ConfigEntry,
    ExternalPort,
    ExternalService,
    FailoverTarget,
    HeaderMatch,
    HttpMatch,
    IntentionPermission,
    IntentionSource,
    MeshConfig,
    ProxyDefaults,
    ResolverFailover,
    ResolverRedirect,
    ResolverSubset,
    ServiceDefaults,
    ServiceIntentions,
    ServiceResolver,
)
from loom.domain.records import TransparentProxySettings

Doc = dict[str, Any]

_HEADER_TEXT = (("Exact", "exact"), ("Prefix", "prefix"), ("Suffix", "suffix"), ("Regex", "regex"))
_PATHS = (("PathExact", "path_exact"), ("PathPrefix", "path_prefix"), ("PathRegex", "path_regex"))


def _tproxy_doc(t: TransparentProxySettings) -> Doc:
    return {"OutboundListenerPort": t.outbound_listener_port, "DialedDirectly": t.dialed_directly}


def _tproxy(d: Doc) -> TransparentProxySettings:
    return TransparentProxySettings(d["OutboundListenerPort"], d["DialedDirectly"])


def _header_doc(h: HeaderMatch) -> Doc:
    doc: Doc = {"Name": h.name}
    for key, attr in (*_HEADER_TEXT, ("Present", "present"), ("Invert", "invert")):
        value = getattr(h, attr)
        if value is not None:
            doc[key] = value
    return doc


def _header(d: Doc) -> HeaderMatch:
    return HeaderMatch(
        name=d["Name"], exact=d.get("Exact"), prefix=d.get("Prefix"), suffix=d.get("Suffix"),
        regex=d.get("Regex"), present=d.get("Present"), invert=d.get("Invert"),
    )  # fmt: skip


def http_match_doc(m: HttpMatch) -> Doc:
    """An intention permission's ``HTTP`` block, only the parts given (Consul's shape, which
    the API answers too)."""
    doc: Doc = {key: getattr(m, attr) for key, attr in _PATHS if getattr(m, attr) is not None}
    if m.methods:
        doc["Methods"] = list(m.methods)
    if m.headers:
        doc["Header"] = [_header_doc(h) for h in m.headers]
    return doc


def _http(d: Doc) -> HttpMatch:
    return HttpMatch(
        path_exact=d.get("PathExact"), path_prefix=d.get("PathPrefix"),
        path_regex=d.get("PathRegex"), methods=tuple(d.get("Methods", ())),
        headers=tuple(_header(h) for h in d.get("Header", ())),
    )  # fmt: skip


def _source_doc(s: IntentionSource) -> Doc:
    doc: Doc = {
        "Name": s.name, "Namespace": s.namespace, "Action": s.action,
        "Description": s.description, "Type": s.type,
    }  # fmt: skip
    if s.permissions:
        doc["Permissions"] = [
            {"Action": p.action, "HTTP": http_match_doc(p.http)} for p in s.permissions
        ]
    if s.legacy_id:
        doc["LegacyID"] = s.legacy_id
    return doc


def _source(d: Doc) -> IntentionSource:
    return IntentionSource(
        name=d["Name"], namespace=d["Namespace"], action=d["Action"],
        description=d["Description"], type=d["Type"],
        permissions=tuple(
            IntentionPermission(p["Action"], _http(p["HTTP"])) for p in d.get("Permissions", ())
        ),
        legacy_id=d.get("LegacyID", ""),
    )  # fmt: skip


def _target_doc(t: ResolverRedirect | FailoverTarget) -> Doc:
    parts = (("Service", t.service), ("ServiceSubset", t.service_subset),
             ("Namespace", t.namespace), ("Datacenter", t.datacenter))  # fmt: skip
    return {key: value for key, value in parts if value}


def _failover_doc(f: ResolverFailover) -> Doc:
    doc = _target_doc(FailoverTarget(f.service, f.service_subset, f.namespace))
    if f.datacenters:
        doc["Datacenters"] = list(f.datacenters)
    if f.targets:
        doc["Targets"] = [_target_doc(t) for t in f.targets]
    return doc


def _resolver_doc(e: ServiceResolver, doc: Doc) -> None:
    """Consul's shape: parts present only when given (``omitempty``)."""
    if e.default_subset:
        doc["DefaultSubset"] = e.default_subset
    if e.subsets:
        doc["Subsets"] = {
            name: {"Filter": s.filter, "OnlyPassing": s.only_passing}
            for name, s in e.subsets.items()
        }
    if e.redirect is not None:
        doc["Redirect"] = _target_doc(e.redirect)
    if e.failover:
        doc["Failover"] = {name: _failover_doc(f) for name, f in e.failover.items()}
    if e.connect_timeout:
        doc["ConnectTimeout"] = e.connect_timeout
    if e.request_timeout:
        doc["RequestTimeout"] = e.request_timeout


def _target_parts(d: Doc) -> Doc:
    return {
        "service": d.get("Service", ""), "service_subset": d.get("ServiceSubset", ""),
        "namespace": d.get("Namespace", ""), "datacenter": d.get("Datacenter", ""),
    }  # fmt: skip


def _resolver(d: Doc, common: Doc) -> ConfigEntry:
    redirect = d.get("Redirect")
    failover = {
        name: ResolverFailover(
            service=f.get("Service", ""), service_subset=f.get("ServiceSubset", ""),
            namespace=f.get("Namespace", ""), datacenters=tuple(f.get("Datacenters", ())),
            targets=tuple(FailoverTarget(**_target_parts(t)) for t in f.get("Targets", ())),
        )
        for name, f in d.get("Failover", {}).items()
    }  # fmt: skip
    return ServiceResolver(
        default_subset=d.get("DefaultSubset", ""),
        subsets={
            name: ResolverSubset(s["Filter"], s["OnlyPassing"])
            for name, s in d.get("Subsets", {}).items()
        },
        redirect=ResolverRedirect(**_target_parts(redirect)) if redirect is not None else None,
        failover=failover,
        connect_timeout=d.get("ConnectTimeout", ""),
        request_timeout=d.get("RequestTimeout", ""),
        **common,
    )


def encode(e: ConfigEntry) -> Doc:
    """Record -> the stored document."""
    doc: Doc = {"Kind": e.kind, "Name": e.name, "Namespace": e.namespace, "Meta": dict(e.meta)}
    if isinstance(e, ServiceDefaults):
        doc["Protocol"] = e.protocol
        doc["MutualTLSMode"] = e.mutual_tls_mode
        doc["Mode"] = e.mode
        doc["TransparentProxy"] = _tproxy_doc(e.transparent_proxy)
        if e.mesh_gateway:  # only when set: older documents stay byte for byte
            doc["MeshGateway"] = {"Mode": e.mesh_gateway}
    elif isinstance(e, ProxyDefaults):
        doc["Config"] = dict(e.config)
        doc["Mode"] = e.mode
        doc["MutualTLSMode"] = e.mutual_tls_mode
        doc["TransparentProxy"] = _tproxy_doc(e.transparent_proxy)
        if e.mesh_gateway:
            doc["MeshGateway"] = {"Mode": e.mesh_gateway}
    elif isinstance(e, MeshConfig):
        doc["TransparentProxy"] = {"MeshDestinationsOnly": e.mesh_destinations_only}
        doc["AllowEnablingPermissiveMutualTLS"] = e.allow_enabling_permissive_mutual_tls
    elif isinstance(e, ServiceIntentions):
        doc["Sources"] = [_source_doc(s) for s in e.sources]
    elif isinstance(e, ServiceResolver):
        _resolver_doc(e, doc)
    else:
        doc["Hosts"] = list(e.hosts)
        doc["Ports"] = [
            {"Number": p.number, "Protocol": p.protocol, "Name": p.name} for p in e.ports
        ]
    doc["CreateIndex"] = e.create_index
    doc["ModifyIndex"] = e.modify_index
    return doc


def _service_defaults(d: Doc, common: Doc) -> ConfigEntry:
    return ServiceDefaults(
        protocol=d["Protocol"], mutual_tls_mode=d["MutualTLSMode"], mode=d["Mode"],
        transparent_proxy=_tproxy(d["TransparentProxy"]),
        mesh_gateway=d.get("MeshGateway", {}).get("Mode", ""), **common,
    )  # fmt: skip


def _proxy_defaults(d: Doc, common: Doc) -> ConfigEntry:
    return ProxyDefaults(
        config=dict(d["Config"]), mode=d["Mode"], mutual_tls_mode=d["MutualTLSMode"],
        transparent_proxy=_tproxy(d["TransparentProxy"]),
        mesh_gateway=d.get("MeshGateway", {}).get("Mode", ""), **common,
    )  # fmt: skip


def _mesh(d: Doc, common: Doc) -> ConfigEntry:
    return MeshConfig(
        mesh_destinations_only=d["TransparentProxy"]["MeshDestinationsOnly"],
        allow_enabling_permissive_mutual_tls=d["AllowEnablingPermissiveMutualTLS"],
        **common,
    )


def _intentions(d: Doc, common: Doc) -> ConfigEntry:
    return ServiceIntentions(sources=tuple(_source(s) for s in d["Sources"]), **common)


def _external(d: Doc, common: Doc) -> ConfigEntry:
    return ExternalService(
        hosts=tuple(d["Hosts"]),
        ports=tuple(ExternalPort(p["Number"], p["Protocol"], p["Name"]) for p in d["Ports"]),
        **common,
    )


_DECODERS = {
    SERVICE_DEFAULTS: _service_defaults, PROXY_DEFAULTS: _proxy_defaults, MESH: _mesh,
    SERVICE_INTENTIONS: _intentions, EXTERNAL_SERVICE: _external, SERVICE_RESOLVER: _resolver,
}  # fmt: skip


def decode(d: Doc) -> ConfigEntry:
    """A stored document -> its record (a KeyError for a malformed one, as every codec)."""
    common: Doc = {
        "name": d["Name"], "namespace": d["Namespace"], "meta": dict(d["Meta"]),
        "create_index": d["CreateIndex"], "modify_index": d["ModifyIndex"],
    }  # fmt: skip
    return _DECODERS[d["Kind"]](d, common)
