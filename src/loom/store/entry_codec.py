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


def encode(e: ConfigEntry) -> Doc:
    """Record -> the stored document."""
    doc: Doc = {"Kind": e.kind, "Name": e.name, "Namespace": e.namespace, "Meta": dict(e.meta)}
    if isinstance(e, ServiceDefaults):
        doc["Protocol"] = e.protocol
        doc["MutualTLSMode"] = e.mutual_tls_mode
        doc["Mode"] = e.mode
        doc["TransparentProxy"] = _tproxy_doc(e.transparent_proxy)
    elif isinstance(e, ProxyDefaults):
        doc["Config"] = dict(e.config)
        doc["Mode"] = e.mode
        doc["MutualTLSMode"] = e.mutual_tls_mode
        doc["TransparentProxy"] = _tproxy_doc(e.transparent_proxy)
    elif isinstance(e, MeshConfig):
        doc["TransparentProxy"] = {"MeshDestinationsOnly": e.mesh_destinations_only}
        doc["AllowEnablingPermissiveMutualTLS"] = e.allow_enabling_permissive_mutual_tls
    elif isinstance(e, ServiceIntentions):
        doc["Sources"] = [_source_doc(s) for s in e.sources]
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
        transparent_proxy=_tproxy(d["TransparentProxy"]), **common,
    )  # fmt: skip


def _proxy_defaults(d: Doc, common: Doc) -> ConfigEntry:
    return ProxyDefaults(
        config=dict(d["Config"]), mode=d["Mode"], mutual_tls_mode=d["MutualTLSMode"],
        transparent_proxy=_tproxy(d["TransparentProxy"]), **common,
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
    SERVICE_INTENTIONS: _intentions, EXTERNAL_SERVICE: _external,
}  # fmt: skip


def decode(d: Doc) -> ConfigEntry:
    """A stored document -> its record (a KeyError for a malformed one, as every codec)."""
    common: Doc = {
        "name": d["Name"], "namespace": d["Namespace"], "meta": dict(d["Meta"]),
        "create_index": d["CreateIndex"], "modify_index": d["ModifyIndex"],
    }  # fmt: skip
    return _DECODERS[d["Kind"]](d, common)
