"""Prepared queries: store them (create, update, delete) and execute them over the catalog.

Queries live in the ``queries`` table, by ID, so they persist, follow other servers sharing
etcd, and travel in snapshots like every table. Writes hold the state's write lock, so the
name checks (no two queries with one name, no name that is another query's ID) see every
acknowledged write. Execution reads the catalog: the query's service instances that its tags,
meta and health keep (``loom.domain.queries.keeps``), or with ``Connect`` the sidecars of
those instances; ``Near`` sorts the named node (``_agent``: this server's node) first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from loom.control.catalog import Catalog
from loom.control.errors import NotFound
from loom.domain.fields import ValidationError
from loom.domain.queries import PreparedQuery, find, keeps, name_conflict, near_first
from loom.domain.records import Check, Instance
from loom.store import Delete, Store, put, tables

Vet = Callable[[PreparedQuery | None, PreparedQuery], None]
"""Checks a write (the stored query or None, the new one) inside the lock: ACLs."""


@dataclass(frozen=True)
class Executed:
    """One execution's result: the (rendered) query and what it kept, in answer order."""

    query: PreparedQuery
    service: str
    namespace: str
    hits: tuple[tuple[Instance, tuple[Check, ...]], ...]


class Queries:
    def __init__(
        self,
        store: Store,
        lock: asyncio.Lock,
        catalog: Catalog,
        session_exists: Callable[[str], bool],
    ) -> None:
        self.store = store
        self._lock = lock
        self.catalog = catalog
        self._session_exists = session_exists

    # -- reads -------------------------------------------------------------------------------

    def all(self) -> list[PreparedQuery]:
        return self.store.records(tables.QUERIES)

    def get(self, query_id: str) -> PreparedQuery | None:
        return self.store.record(tables.QUERIES, query_id)

    def resolve(self, id_or_name: str) -> PreparedQuery:
        """The query an execute or explain names (a template rendered), else ``NotFound``."""
        found = find(self.all(), id_or_name)
        if found is None:
            raise NotFound("Query not found")
        return found

    # -- writes ------------------------------------------------------------------------------

    async def create(self, parsed: PreparedQuery, vet: Vet | None = None) -> PreparedQuery:
        async with self._lock:
            q = replace(parsed, id=str(uuid.uuid4()))
            self._validate(q)
            if vet is not None:
                vet(None, q)
            index = self.store.index + 1
            q = replace(q, create_index=index, modify_index=index)
            await self.store.apply([put(tables.QUERIES, q.id, q)])
            return q

    async def update(self, parsed: PreparedQuery, vet: Vet | None = None) -> PreparedQuery:
        async with self._lock:
            old = self.get(parsed.id)
            if old is None:
                raise ValidationError(f"Cannot modify non-existent prepared query: '{parsed.id}'")
            self._validate(parsed)
            if vet is not None:
                vet(old, parsed)
            q = replace(parsed, create_index=old.create_index, modify_index=self.store.index + 1)
            await self.store.apply([put(tables.QUERIES, q.id, q)])
            return q

    async def delete(self, query_id: str, vet: Vet | None = None) -> None:
        async with self._lock:
            old = self.get(query_id)
            if old is None:
                raise ValidationError(f"Cannot delete non-existent prepared query: '{query_id}'")
            if vet is not None:
                vet(old, old)
            await self.store.apply([Delete(tables.QUERIES.name, query_id)])

    def _validate(self, q: PreparedQuery) -> None:
        if q.session and not self._session_exists(q.session):
            raise ValidationError(f"invalid session '{q.session}'")
        problem = name_conflict(self.all(), q)
        if problem is not None:
            raise ValidationError(problem)

    # -- execution ---------------------------------------------------------------------------

    def execute(
        self,
        q: PreparedQuery,
        agent_node: str,
        limit: int = 0,
        shuffle: Callable[[list[int]], None] | None = None,
    ) -> Executed:
        """Run ``q``. Without ``Near`` the kept instances are put in ``shuffle``'s order, as
        Consul shuffles them on each execution (the HTTP API passes ``random.shuffle``; the
        mesh snapshot passes none, so its endpoints do not move from one build to the next);
        with ``Near`` its node's come first, the rest in catalog order. ``limit`` applies
        after."""
        s = q.service
        ns = s.namespace or "default"
        cat = self.catalog
        kept: list[tuple[Instance, tuple[Check, ...]]] = []
        for inst in cat.instances_of(ns, s.service):
            if inst.is_proxy:
                continue
            checks = cat.checks_of(inst)
            if keeps(s, inst, cat.node_of(inst), checks):
                kept.append((inst, tuple(checks)))
        if s.connect:
            kept = self._sidecars(kept)
        order = near_first([inst.node for inst, _ in kept], s.near, agent_node)
        if shuffle is not None and not s.near:
            shuffle(order)
        hits = tuple(kept[i] for i in order)
        if limit > 0:
            hits = hits[:limit]
        return Executed(q, s.service, ns, hits)

    def _sidecars(
        self, kept: list[tuple[Instance, tuple[Check, ...]]]
    ) -> list[tuple[Instance, tuple[Check, ...]]]:
        """The sidecars of the kept instances, healthy themselves (Consul's connect lookup)."""
        wanted = {(i.node, i.namespace, i.id) for i, _ in kept}
        out: list[tuple[Instance, tuple[Check, ...]]] = []
        for inst in self.catalog.instances():
            p = inst.proxy
            if p is None or (inst.node, inst.namespace, p.destination_service_id) not in wanted:
                continue
            checks = self.catalog.checks_of(inst)
            if all(c.status != "critical" for c in checks):
                out.append((inst, tuple(checks)))
        return out


__all__ = ["Executed", "Queries", "Vet"]
