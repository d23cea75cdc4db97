"""``/v1/txn`` over KV and the catalog at once: every op planned in order under the write
lock, then all of them committed in one store transaction, or none if any failed.

KV ops are planned by ``loom.control.kv`` (its ``_Plan``); catalog ops (Consul's ``Node``,
``Service`` and ``Check`` verbs) by ``CatalogPlan`` here, which keeps the records the ops so
far have written or deleted over the store's view. Their rules are Consul's state store's:

- ``set`` writes the record; ``cas`` only when its ModifyIndex is the op's (0: it must not
  exist); ``get`` returns it (an error when absent); ``delete`` removes it (nothing to do
  when absent); ``delete-cas`` only when it is absent or at the op's ModifyIndex.
- a service or check needs its node (``Missing node registration``), a service check its
  service (``Missing service registration``); deleting a node deletes its services and
  checks, deleting a service its checks.
- records are validated as ``PUT /v1/catalog/register`` validates them, and VIPs follow the
  instances written, as in any registration.

Results carry the record as it is once the transaction is committed, with the indexes the
store will stamp on it (``loom.domain.records.stamp_indexes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loom.control.catalog import CHECKS, NODES, SERVICES, Catalog
from loom.control.indexes import vip_key
from loom.control.kv import Allowed, Kv, OpError, ReadAllowed
from loom.domain.catalog_txn import CatalogOp
from loom.domain.fields import ValidationError
from loom.domain.kv import KvEntry, KvOp
from loom.domain.records import Check, Instance, Node, stamp_indexes
from loom.domain.services import DEFAULT_NAMESPACE, catalog_registration, check_key, instance_key
from loom.store import Delete, Op, put, tables

Record = KvEntry | Node | Instance | Check
CatalogAllowed = Callable[[CatalogOp, Node | Instance | Check | None], bool]
"""Whether the caller may run a catalog op, given the record it acts on now (None: absent)."""


@dataclass
class TxnOutcome:
    """What a transaction did: each op's results in order (KV entries or catalog records),
    or the errors (and no write)."""

    index: int
    results: list[Record] = field(default_factory=list)
    errors: list[OpError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class CatalogPlan:
    """The catalog as the ops so far have left it (pending records over the store's view)."""

    def __init__(self, catalog: Catalog, index: int) -> None:
        self.catalog, self.store, self.index = catalog, catalog.store, index
        self.pending: dict[tuple[str, str], Any] = {}  # (table, key) -> record | None

    def get(self, table: str, key: str) -> Any:
        if (table, key) in self.pending:
            return self.pending[(table, key)]
        return self.store.peek(table, key)

    def _write(self, table: str, key: str, record: Any) -> Any:
        old = self.store.peek(table, key)
        stamped = stamp_indexes(old, record, self.index, self.store.legacy_index(table))
        self.pending[(table, key)] = stamped
        return stamped

    def _keys(self, table: str, stored: Iterable[str], match: Callable[[Any], bool]) -> list[str]:
        """Keys of ``table`` whose record (as planned) ``match``es: among ``stored`` (from
        the catalog's indexes) and those the transaction wrote."""
        keys = set(stored)
        keys |= {k for (t, k), v in self.pending.items() if t == table and v is not None}
        return sorted(k for k in keys if (v := self.get(table, k)) is not None and match(v))

    def target(self, op: CatalogOp) -> tuple[str, str]:
        """The (table, key) of the record ``op`` acts on."""
        if op.kind == "Node":
            return NODES, op.node
        ns = str(op.body.get("Namespace") or DEFAULT_NAMESPACE)
        if op.kind == "Service":
            return SERVICES, instance_key(op.node, ns, op.id)
        return CHECKS, check_key(op.node, ns, op.id)

    def step(self, op: CatalogOp) -> tuple[Record | None, str | None]:
        """Plan ``op``: (its result, None) or (None, why it failed)."""
        table, key = self.target(op)
        old = self.get(table, key)
        what = _what(op)
        if op.verb == "get":
            return (old, None) if old is not None else (None, f"{what} doesn't exist")
        if op.verb == "cas" and (old.modify_index if old is not None else 0) != op.index:
            return None, f"failed to set {what}, index is stale"
        if op.verb == "delete-cas" and old is not None and old.modify_index != op.index:
            return None, f"failed to delete {what}, index is stale"
        if op.verb in ("delete", "delete-cas"):
            self._delete(table, key, old)
            return None, None
        try:
            record = self._parse(op, old)
        except ValidationError as exc:
            return None, str(exc)
        return self._write(table, key, record), None

    def _parse(self, op: CatalogOp, old: Any) -> Node | Instance | Check:
        dc = self.catalog.settings.datacenter
        if op.kind == "Node":
            body = {**op.body, "NodeMeta": op.body.get("Meta")}
            node, _ = catalog_registration({k: v for k, v in body.items() if k != "Meta"}, dc)
            return node
        node = self.get(NODES, op.node)
        if node is None:
            raise ValidationError("Missing node registration")
        wrapper = {"Node": op.node, "Address": node.address}
        if op.kind == "Service":
            _, reg = catalog_registration({**wrapper, "Service": op.body}, dc)
            return reg.instances[0]
        _, reg = catalog_registration({**wrapper, "Check": op.body}, dc)
        check = reg.checks[0]
        if not check.service_id:
            return check
        service = self.get(SERVICES, instance_key(op.node, check.namespace, check.service_id))
        if service is None:
            raise ValidationError("Missing service registration")
        return replace(check, service_name=service.service, namespace=service.namespace)

    def _delete(self, table: str, key: str, old: Any) -> None:
        if old is None:
            return
        self.pending[(table, key)] = None
        cat = self.catalog
        if table == NODES:
            on_node: Callable[[Any], bool] = lambda r: r.node == old.node  # noqa: E731
            for k in self._keys(SERVICES, cat.services.by_node.get(old.node, ()), on_node):
                self._delete(SERVICES, k, self.get(SERVICES, k))
            for k in self._keys(CHECKS, cat.checks.by_node.get(old.node, ()), on_node):
                self.pending[(CHECKS, k)] = None
        elif table == SERVICES:
            owner = (old.node, old.namespace, old.id)
            of_it: Callable[[Check], bool] = lambda c: (  # noqa: E731
                (c.node, c.namespace, c.service_id) == owner
            )
            for k in self._keys(CHECKS, cat.checks.by_instance.get(owner, {}), of_it):
                self.pending[(CHECKS, k)] = None

    def ops(self) -> tuple[list[Op], dict[str, int]]:
        """The store ops and the VIP users' change (for ``Catalog``'s VIP allocation)."""
        out: list[Op] = []
        delta: dict[str, int] = {}
        for (table, key), record in self.pending.items():
            old = self.store.peek(table, key)
            if table == SERVICES:
                for inst, step in ((old, -1), (record, 1)):
                    if inst is not None and not inst.is_proxy:
                        vk = vip_key(inst.namespace, inst.service)
                        delta[vk] = delta.get(vk, 0) + step
            if record is None:
                if old is not None:
                    out.append(Delete(table, key))
            else:
                out.append(put(tables.TABLES[table], key, record))
        return out, delta


def _what(op: CatalogOp) -> str:
    if op.kind == "Node":
        return f"node {_q(op.node)}"
    return f"{op.kind.lower()} {_q(op.id)} on node {_q(op.node)}"


class Txn:
    """Runs a ``/v1/txn`` of KV and catalog ops as one transaction."""

    def __init__(self, kv: Kv, catalog: Catalog, lock: Any) -> None:
        self.kv, self.catalog, self._lock = kv, catalog, lock

    async def apply(
        self,
        ops: Sequence[KvOp | CatalogOp],
        kv_allowed: Allowed | None = None,
        catalog_allowed: CatalogAllowed | None = None,
        readable: ReadAllowed | None = None,
    ) -> TxnOutcome:
        store = self.kv.store
        if all(op.reads_only for op in ops):
            return self._run(ops, store.index, kv_allowed, catalog_allowed, readable)[0]
        async with self._lock:
            index = store.index + 1
            outcome, writes, delta = self._run(ops, index, kv_allowed, catalog_allowed, readable)
            if not outcome.ok:
                outcome.index = store.index
            elif writes or delta:
                outcome.index = await self.catalog.commit(writes, delta)
            return outcome

    def _run(
        self,
        ops: Sequence[KvOp | CatalogOp],
        index: int,
        kv_allowed: Allowed | None,
        catalog_allowed: CatalogAllowed | None,
        readable: ReadAllowed | None,
    ) -> tuple[TxnOutcome, list[Op], dict[str, int]]:
        kv_plan, cat_plan = self.kv.plan(index), CatalogPlan(self.catalog, index)
        outcome = TxnOutcome(index)
        for n, op in enumerate(ops):
            if isinstance(op, KvOp):
                found, error = self.kv.run_op(kv_plan, n, op, kv_allowed, readable)
                outcome.results.extend(found)
                if error is not None:
                    outcome.errors.append(error)
                continue
            table, key = cat_plan.target(op)
            if catalog_allowed is not None and not catalog_allowed(op, cat_plan.get(table, key)):
                outcome.errors.append(OpError(n, "Permission denied"))
                continue
            result, what = cat_plan.step(op)
            if what is not None:
                outcome.errors.append(OpError(n, what))
            elif result is not None:
                outcome.results.append(result)
        if outcome.errors:
            return replace(outcome, results=[]), [], {}
        cat_ops, delta = cat_plan.ops()
        return outcome, [*kv_plan.ops(), *cat_ops], delta


__all__ = ["CatalogPlan", "Txn", "TxnOutcome"]
