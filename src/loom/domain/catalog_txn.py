"""The catalog operations of a ``/v1/txn`` body: Consul's ``Node``, ``Service`` and ``Check``
ops, decoded (pure) beside the KV ops of ``loom.domain.kv``.

Each op names a verb (``set``, ``cas``, ``get``, ``delete``, ``delete-cas``) and the record it
acts on in Consul's JSON: a node (``{"Node": {"Verb", "Node": {Node, Address, ...}}}``), a
service of a node (``{"Service": {"Verb", "Node", "Service": {ID, Service, ...}}}``) or a check
(``{"Check": {"Verb", "Check": {Node, CheckID, ...}}}``). ``cas`` and ``delete-cas`` compare
the record's ``ModifyIndex`` (0 with ``cas``: it must not exist yet). The record body is kept
as given and validated when the op is planned (``loom.control.txn``), with the catalog's own
registration rules, so a txn write is held to what ``PUT /v1/catalog/register`` is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loom.domain.fields import Fields, ValidationError, check_id, field_key

CATALOG_KINDS = ("Node", "Service", "Check")
CATALOG_VERBS = ("set", "cas", "get", "delete", "delete-cas")
INDEX_FIELDS = frozenset({field_key("CreateIndex"), field_key("ModifyIndex")})
"""Raft indexes in a record body: the store sets them, a body never does (``ModifyIndex``
is read as the compared index of ``cas``/``delete-cas`` only)."""


@dataclass(frozen=True)
class CatalogOp:
    """One ``Node``, ``Service`` or ``Check`` op of a transaction."""

    kind: str
    """Node | Service | Check."""
    verb: str
    node: str
    """The node the record is on (the node itself for a ``Node`` op)."""
    id: str = ""
    """The service ID or check ID (empty for a ``Node`` op)."""
    index: int = 0
    """The ModifyIndex ``cas`` and ``delete-cas`` compare with."""
    body: dict[str, Any] = field(default_factory=dict)
    """The record as given (indexes removed), validated when planned."""

    @property
    def reads_only(self) -> bool:
        return self.verb == "get"


def parse_catalog_op(raw: Fields, kind: str) -> CatalogOp:
    """The ``kind`` op at ``raw`` (the value under ``"Node"``, ``"Service"`` or ``"Check"``)."""
    verb = raw.one_of("Verb", CATALOG_VERBS)
    inner = raw.sub(kind)
    if inner is None:
        raise ValidationError(f"{raw.where(kind)}: is required")
    body = {k: v for k, v in inner.obj.items() if field_key(str(k)) not in INDEX_FIELDS}
    index = inner.integer("ModifyIndex", 0, 0, (1 << 64) - 1)
    if kind == "Node":
        node = inner.text("Node", required=True)
        check_id(node, inner.where("Node"))
        return CatalogOp(kind, verb, node, index=index, body=body)
    if kind == "Service":
        node = raw.text("Node", required=True)
        sid = inner.text("ID") or inner.text("Service")
        if not sid:
            raise ValidationError(f"{inner.where('ID')}: is required")
        return CatalogOp(kind, verb, node, check_id(sid, inner.where("ID")), index, body)
    node = inner.text("Node", required=True)
    cid = inner.text("CheckID")
    if not cid:
        raise ValidationError(f"{inner.where('CheckID')}: is required")
    return CatalogOp(kind, verb, node, check_id(cid, inner.where("CheckID")), index, body)


__all__ = ["CATALOG_KINDS", "CATALOG_VERBS", "CatalogOp", "parse_catalog_op"]
