"""Every table of the state, by name, with the codec of its stored form: the one place both live.

``Table[T]`` names a table whose in-memory values are records of type ``T``; the store keeps
records in its view and encodes them (``encode``) only when persisting, decodes (``decode``)
only when loading or following another server, so the documents on disk stay exactly as they
were when the core passed dicts around (same keys, same values: ``json.dumps(...,
sort_keys=True)`` of them is byte-identical). Tables whose values are still documents have
the identity codec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from loom.acl.binding import BindingRule
from loom.acl.records import AuthMethod, Policy, Role, Token
from loom.acl.stored import Stored, decoder, encoder
from loom.domain.checks import definition_doc, parse_definition
from loom.domain.entries import ConfigEntry
from loom.domain.federation import FederationState, state_from_json, state_to_json
from loom.domain.fields import Fields
from loom.domain.kv import KvEntry, ServiceCheckRef, Session, decode_value, encode_value
from loom.domain.queries import PreparedQuery, query_doc, query_from_doc
from loom.domain.records import (
    CaRoot,
    Check,
    Cluster,
    Expose,
    ExposedPath,
    ExternalVips,
    Instance,
    Node,
    Proxy,
    TaggedAddress,
    TransparentProxySettings,
    Upstream,
    VirtualIp,
    Weights,
)
from loom.store import entry_codec

Doc = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Table(Generic[T]):
    name: str
    encode: Callable[[T], Doc]
    """Record -> stored document."""
    decode: Callable[[Doc], T]
    """Stored document -> record (documents written by any earlier version)."""


def _doc(value: Doc) -> Doc:
    return value


def _check_doc(c: Check) -> Doc:
    doc: Doc = {
        "Node": c.node, "CheckID": c.check_id, "Name": c.name, "Status": c.status,
        "Notes": c.notes, "Output": c.output, "ServiceID": c.service_id,
        "ServiceName": c.service_name, "Namespace": c.namespace, "Type": c.type, "TTL": c.ttl,
    }  # fmt: skip
    # Only checks that run carry these: TTL and static checks keep their earlier documents.
    if c.definition is not None:
        doc["Definition"] = definition_doc(c.definition)
    if c.managed:
        doc["Managed"] = True
    return doc


def _check(d: Doc) -> Check:
    raw = d.get("Definition")
    definition = None
    if raw:
        definition = parse_definition(Fields(raw, "Definition"), scripts=True, lenient=True)
    return Check(
        node=d["Node"], check_id=d["CheckID"], name=d["Name"], status=d["Status"],
        notes=d["Notes"], output=d["Output"], service_id=d["ServiceID"],
        service_name=d["ServiceName"], namespace=d["Namespace"], type=d["Type"], ttl=d["TTL"],
        definition=definition, managed=bool(d.get("Managed")),
    )  # fmt: skip


def _node_doc(n: Node) -> Doc:
    return {
        "Node": n.node, "ID": n.id, "Address": n.address, "Datacenter": n.datacenter,
        "TaggedAddresses": dict(n.tagged_addresses), "Meta": dict(n.meta),
    }  # fmt: skip


def _node(d: Doc) -> Node:
    return Node(
        node=d["Node"], id=d["ID"], address=d["Address"], datacenter=d["Datacenter"],
        tagged_addresses=dict(d["TaggedAddresses"]), meta=dict(d["Meta"]),
    )  # fmt: skip


def _upstream_doc(u: Upstream) -> Doc:
    return {
        "DestinationType": u.destination_type, "DestinationName": u.destination_name,
        "DestinationNamespace": u.destination_namespace, "Datacenter": u.datacenter,
        "LocalBindAddress": u.local_bind_address, "LocalBindPort": u.local_bind_port,
        "Config": dict(u.config),
        # Only when set: documents stored before MeshGateway was kept stay byte for byte.
        **({"MeshGateway": {"Mode": u.mesh_gateway}} if u.mesh_gateway else {}),
    }  # fmt: skip


def _upstream(d: Doc) -> Upstream:
    return Upstream(
        destination_name=d["DestinationName"], destination_type=d["DestinationType"],
        destination_namespace=d["DestinationNamespace"], datacenter=d["Datacenter"],
        local_bind_address=d["LocalBindAddress"], local_bind_port=d["LocalBindPort"],
        config=dict(d["Config"]), mesh_gateway=d.get("MeshGateway", {}).get("Mode", ""),
    )  # fmt: skip


def _proxy_doc(p: Proxy) -> Doc:
    doc: Doc = {
        "DestinationServiceName": p.destination_service_name,
        "DestinationServiceID": p.destination_service_id,
        "LocalServiceAddress": p.local_service_address,
        "LocalServicePort": p.local_service_port,
        "Mode": p.mode,
        "TransparentProxy": {
            "OutboundListenerPort": p.transparent_proxy.outbound_listener_port,
            "DialedDirectly": p.transparent_proxy.dialed_directly,
        },
        "Upstreams": [_upstream_doc(u) for u in p.upstreams],
        "Config": dict(p.config),
    }
    if p.expose is not None:
        doc["Expose"] = {
            "Checks": p.expose.checks,
            "Paths": [
                {"ListenerPort": e.listener_port, "Path": e.path,
                 "LocalPathPort": e.local_path_port, "Protocol": e.protocol}
                for e in p.expose.paths
            ],
        }  # fmt: skip
    if p.mesh_gateway:
        doc["MeshGateway"] = {"Mode": p.mesh_gateway}
    return doc


def _proxy(d: Doc) -> Proxy:
    tp, ex = d["TransparentProxy"], d.get("Expose")
    expose = None
    if ex is not None:
        paths = tuple(
            ExposedPath(e["ListenerPort"], e["Path"], e["LocalPathPort"], e["Protocol"])
            for e in ex["Paths"]
        )
        expose = Expose(ex["Checks"], paths)
    return Proxy(
        destination_service_name=d["DestinationServiceName"],
        destination_service_id=d["DestinationServiceID"],
        local_service_address=d["LocalServiceAddress"],
        local_service_port=d["LocalServicePort"],
        mode=d["Mode"],
        transparent_proxy=TransparentProxySettings(
            tp["OutboundListenerPort"], tp["DialedDirectly"]
        ),
        upstreams=tuple(_upstream(u) for u in d["Upstreams"]),
        config=dict(d["Config"]),
        expose=expose,
        mesh_gateway=d.get("MeshGateway", {}).get("Mode", ""),
    )


def _instance_doc(i: Instance) -> Doc:
    doc: Doc = {
        "Node": i.node, "Datacenter": i.datacenter, "ID": i.id, "Service": i.service,
        "Kind": i.kind, "Namespace": i.namespace, "Address": i.address, "Port": i.port,
        "Tags": list(i.tags), "Meta": dict(i.meta),
        "TaggedAddresses": {
            tag: {"Address": t.address, "Port": t.port} for tag, t in i.tagged_addresses.items()
        },
        "EnableTagOverride": i.enable_tag_override,
        "Weights": {"Passing": i.weights.passing, "Warning": i.weights.warning},
        "Connect": {"Native": i.connect_native},
    }  # fmt: skip
    if i.proxy is not None:
        doc["Proxy"] = _proxy_doc(i.proxy)
    return doc


def _instance(d: Doc) -> Instance:
    return Instance(
        node=d["Node"], datacenter=d["Datacenter"], id=d["ID"], service=d["Service"],
        kind=d["Kind"], namespace=d["Namespace"], address=d["Address"], port=d["Port"],
        tags=tuple(d["Tags"]), meta=dict(d["Meta"]),
        tagged_addresses={
            tag: TaggedAddress(t["Address"], t["Port"]) for tag, t in d["TaggedAddresses"].items()
        },
        enable_tag_override=d["EnableTagOverride"],
        weights=Weights(d["Weights"]["Passing"], d["Weights"]["Warning"]),
        connect_native=d["Connect"]["Native"],
        proxy=_proxy(d["Proxy"]) if "Proxy" in d else None,
    )  # fmt: skip


SERVICES: Table[Instance] = Table("services", _instance_doc, _instance)
CHECKS: Table[Check] = Table("checks", _check_doc, _check)
NODES: Table[Node] = Table("nodes", _node_doc, _node)
VIPS: Table[VirtualIp] = Table(
    "vips", lambda v: {"Address": v.address}, lambda d: VirtualIp(d["Address"])
)
CONFIG: Table[ConfigEntry] = Table("config", entry_codec.encode, entry_codec.decode)
EXTERNAL_VIPS: Table[ExternalVips] = Table(
    "external_vips",
    lambda v: {"Address": v.address, "Address6": v.address6},
    lambda d: ExternalVips(d["Address"], d["Address6"]),
)
CA: Table[CaRoot] = Table(
    "ca",
    lambda r: {"CertPEM": r.cert_pem, "KeyPEM": r.key_pem, "TrustDomain": r.trust_domain},
    lambda d: CaRoot(d["CertPEM"], d["KeyPEM"], d["TrustDomain"]),
)
META: Table[Cluster] = Table("meta", lambda c: {"ID": c.id}, lambda d: Cluster(d["ID"]))
ACL_TOKENS: Table[Stored[Token]] = Table("acl_tokens", encoder, decoder(Token.from_json))
ACL_POLICIES: Table[Stored[Policy]] = Table("acl_policies", encoder, decoder(Policy.from_json))
ACL_ROLES: Table[Stored[Role]] = Table("acl_roles", encoder, decoder(Role.from_json))
ACL_META: Table[Doc] = Table("acl_meta", _doc, _doc)
ACL_AUTH_METHODS: Table[Stored[AuthMethod]] = Table(
    "acl_auth_methods", encoder, decoder(AuthMethod.from_json)
)
ACL_BINDING_RULES: Table[Stored[BindingRule]] = Table(
    "acl_binding_rules", encoder, decoder(BindingRule.from_json)
)
CA_CONFIG: Table[Doc] = Table("ca_config", _doc, _doc)
"""The CA configuration written with ``PUT /v1/connect/ca/configuration`` (Consul's shape)."""



def _kv_doc(e: KvEntry) -> Doc:
    return {
        "Key": e.key, "Value": encode_value(e.value), "Flags": e.flags, "LockIndex": e.lock_index,
        "Session": e.session, "CreateIndex": e.create_index, "ModifyIndex": e.modify_index,
    }  # fmt: skip


def _kv(d: Doc) -> KvEntry:
    return KvEntry(
        key=d["Key"], value=decode_value(d["Value"], "Value"), flags=d["Flags"],
        lock_index=d["LockIndex"], session=d["Session"], create_index=d["CreateIndex"],
        modify_index=d["ModifyIndex"],
    )  # fmt: skip


def _session_doc(s: Session) -> Doc:
    return {
        "ID": s.id, "Node": s.node, "Name": s.name, "LockDelay": s.lock_delay_ns,
        "Behavior": s.behavior, "TTL": s.ttl, "NodeChecks": list(s.node_checks),
        "ServiceChecks": [{"ID": c.id, "Namespace": c.namespace} for c in s.service_checks],
        "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
    }  # fmt: skip


def _session(d: Doc) -> Session:
    return Session(
        id=d["ID"], node=d["Node"], name=d["Name"], lock_delay_ns=d["LockDelay"],
        behavior=d["Behavior"], ttl=d["TTL"], node_checks=tuple(d["NodeChecks"]),
        service_checks=tuple(ServiceCheckRef(c["ID"], c["Namespace"]) for c in d["ServiceChecks"]),
        create_index=d["CreateIndex"], modify_index=d["ModifyIndex"],
    )  # fmt: skip


KV: Table[KvEntry] = Table("kv", _kv_doc, _kv)
"""The KV store, by key."""
KV_TOMBSTONES: Table[Doc] = Table("kv_tombstones", _doc, _doc)
"""Deleted keys -> ``{"Index": n}``, the index of their deletion, so a blocking query on a
prefix wakes (and its index moves) when a key under it goes away, as Consul's tombstones do."""
SESSIONS: Table[Session] = Table("sessions", _session_doc, _session)
SESSION_RENEWALS: Table[Doc] = Table("session_renewals", _doc, _doc)
"""Session ID -> ``{"At": unix time}`` of its last renew, written only when servers share the
store (etcd), so every server's TTL timer sees a renew made through another."""

QUERIES: Table[PreparedQuery] = Table("queries", query_doc, query_from_doc)
"""Prepared queries (``/v1/query``), by ID. Not a KV table: a sidecar's
``prepared_query`` upstream resolves through them, so their writes reach xDS."""

FEDERATION_STATES: Table[FederationState] = Table(
    "federation_states", state_to_json, state_from_json
)
"""Every other datacenter this server has learned (``loom.control.federation``), by name."""

TABLES: dict[str, Table[Any]] = {
    t.name: t
    for t in (SERVICES, CHECKS, NODES, VIPS, CONFIG, EXTERNAL_VIPS, CA, META, CA_CONFIG)
}
TABLES.update((t.name, t) for t in (KV, KV_TOMBSTONES, SESSIONS, SESSION_RENEWALS, QUERIES))
TABLES[FEDERATION_STATES.name] = FEDERATION_STATES
TABLES.update(
    (t.name, t)
    for t in (ACL_TOKENS, ACL_POLICIES, ACL_ROLES, ACL_META, ACL_AUTH_METHODS, ACL_BINDING_RULES)
)
CATALOG_TABLES = (SERVICES.name, CHECKS.name, NODES.name, VIPS.name)
CONFIG_TABLES = (CONFIG.name, EXTERNAL_VIPS.name)
FEDERATION_TABLES = (FEDERATION_STATES.name,)
KV_TABLES = (KV.name, KV_TOMBSTONES.name, SESSIONS.name, SESSION_RENEWALS.name)
"""Tables no mesh consumer reads: their writes wake KV readers only (not xDS, not the DNS
table, not catalog blocking queries)."""
ACL_TABLES = (
    ACL_TOKENS.name,
    ACL_POLICIES.name,
    ACL_ROLES.name,
    ACL_META.name,
    ACL_AUTH_METHODS.name,
    ACL_BINDING_RULES.name,
)


def encode(table: str, value: Any) -> Doc:
    """The stored document of ``value`` in ``table``; documents (untyped tables, or a typed
    table's value given in stored form) pass as they are."""
    if isinstance(value, dict):
        return value
    return TABLES[table].encode(value)


def decode(table: str, doc: Doc) -> Any:
    """The in-memory value of stored ``doc``: a record for typed tables, else the document."""
    codec = TABLES.get(table)
    return codec.decode(doc) if codec is not None else doc
