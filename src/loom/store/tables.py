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

from loom.domain.records import CaRoot, Check, Cluster, ExternalVips, Node, VirtualIp

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
    return {
        "Node": c.node, "CheckID": c.check_id, "Name": c.name, "Status": c.status,
        "Notes": c.notes, "Output": c.output, "ServiceID": c.service_id,
        "ServiceName": c.service_name, "Namespace": c.namespace, "Type": c.type, "TTL": c.ttl,
    }  # fmt: skip


def _check(d: Doc) -> Check:
    return Check(
        node=d["Node"], check_id=d["CheckID"], name=d["Name"], status=d["Status"],
        notes=d["Notes"], output=d["Output"], service_id=d["ServiceID"],
        service_name=d["ServiceName"], namespace=d["Namespace"], type=d["Type"], ttl=d["TTL"],
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


SERVICES: Table[Doc] = Table("services", _doc, _doc)
CHECKS: Table[Check] = Table("checks", _check_doc, _check)
NODES: Table[Node] = Table("nodes", _node_doc, _node)
VIPS: Table[VirtualIp] = Table(
    "vips", lambda v: {"Address": v.address}, lambda d: VirtualIp(d["Address"])
)
CONFIG: Table[Doc] = Table("config", _doc, _doc)
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

TABLES: dict[str, Table[Any]] = {
    t.name: t for t in (SERVICES, CHECKS, NODES, VIPS, CONFIG, EXTERNAL_VIPS, CA, META)
}
CATALOG_TABLES = (SERVICES.name, CHECKS.name, NODES.name, VIPS.name)
CONFIG_TABLES = (CONFIG.name, EXTERNAL_VIPS.name)


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
