"""The catalog side of ``/v1/txn`` at the HTTP edge: each op's ACL rule and each result's
Consul JSON (``{"KV": ...}``, ``{"Node": ...}``, ``{"Service": ...}``, ``{"Check": ...}``).

ACLs, per op as Consul's ``vet*TxnOp`` do: a ``Node`` op needs ``node:write`` on its node
(``node:read`` for ``get``); a ``Service`` op ``service:write`` on the service's name (the
stored one and the one written, and on the destination of a connect-proxy) and ``node:read``
for ``get`` with ``service:read``; a ``Check`` op ``service:write`` on its service, or
``node:write`` on its node for a node check (reads alike). A refused op fails the whole
transaction with ``Permission denied`` at its OpIndex, before anything is planned.
"""

from __future__ import annotations

from typing import Any

from loom.acl.authorizer import Authorizer
from loom.control.state import State
from loom.control.txn import CatalogAllowed, Record
from loom.domain.catalog_txn import CatalogOp
from loom.domain.fields import Fields, ValidationError
from loom.domain.kv import KvEntry
from loom.domain.records import CONNECT_PROXY, Check, Instance, Node
from loom.server import views

Doc = dict[str, Any]


def _names(op: CatalogOp, current: Node | Instance | Check | None) -> set[str]:
    """The service names a Service or Check op touches (empty: a node check)."""
    names: set[str] = set()
    if isinstance(current, Instance):
        names.add(current.service)
    elif isinstance(current, Check) and current.service_name:
        names.add(current.service_name)
    if op.kind == "Service" and op.verb in ("set", "cas"):
        try:
            f = Fields(op.body, "Service")
            names.add(f.text("Service") or f.text("Name") or op.id)
            proxy = f.sub("Proxy")
            if f.text("Kind") == CONNECT_PROXY and proxy is not None:
                names.add(proxy.text("DestinationServiceName"))
        except ValidationError:
            names.add(op.id)  # the planner refuses the body; still vetted by its ID
    return {n for n in names if n}


def catalog_vet(authz: Authorizer) -> CatalogAllowed:
    def allowed(op: CatalogOp, current: Node | Instance | Check | None) -> bool:
        read = op.reads_only
        if op.kind == "Node":
            return authz.node_read(op.node) if read else authz.node_write(op.node)
        names = _names(op, current)
        if op.kind == "Check" and not names:
            service_id = Fields(op.body, "Check").text("ServiceID")
            if service_id:  # a check of a service not yet known: vetted on its ID
                names = {service_id}
        if not names:  # a node check
            return authz.node_read(op.node) if read else authz.node_write(op.node)
        if read:
            return authz.node_read(op.node) and all(authz.service_read(n) for n in names)
        return all(authz.service_write(n) for n in names)

    return allowed


def txn_result(state: State, r: Record) -> Doc:
    from loom.server.kv_http import entry_json

    cat = state.catalog
    if isinstance(r, KvEntry):
        return {"KV": entry_json(r)}
    if isinstance(r, Node):
        return {"Node": views.indexed_node(cat, r)}
    if isinstance(r, Instance):
        return {"Service": views.node_service(cat, r)}
    return {"Check": views.service_check(cat, r)}


__all__ = ["catalog_vet", "txn_result"]
