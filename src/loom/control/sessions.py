"""Sessions: create, renew, destroy, and invalidation (TTL expiry, a linked check failing).

A session is what holds KV locks (``?acquire=``). It ends - is invalidated - when destroyed,
when its TTL passes without a renew, when one of its linked checks is critical or gone, or
when its node leaves the catalog; then its locks are released or its keys deleted (its
``Behavior``) in the same store transaction that removes it, and the freed keys get the
session's lock delay (``Kv.delay``).

TTL deadlines are kept in memory, as Consul keeps its session timers: a renew writes
nothing, and after a restart every TTL starts over (Consul resets its timers on a leader
change). Servers sharing one etcd each run the timers, so there a renew is also written
(``session_renewals``: the wall-clock time of the renew), and each server's deadline is the
later of its own timer and that time plus the grace. Like Consul, a session lives up to twice
its TTL (``ttl_multiplier``) before it is invalidated, so a client that renews at TTL/2 never
loses it to a slow network.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from loom.control.catalog import Catalog
from loom.control.errors import NotFound
from loom.control.kv import Kv
from loom.domain.fields import ValidationError
from loom.domain.kv import DELETE, SERF_HEALTH, Session
from loom.store import Delete, Op, Store, put, tables

SESSIONS = tables.SESSIONS.name


@dataclass(frozen=True)
class SessionSettings:
    node: str
    """The server's own node: the default ``Node`` of a session, always present."""
    ttl_multiplier: float = 2.0
    """A TTL session is invalidated this many TTLs after its last renew (Consul: 2)."""


class Sessions:
    def __init__(
        self,
        store: Store,
        lock: asyncio.Lock,
        kv: Kv,
        catalog: Catalog,
        settings: SessionSettings,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._lock = lock
        self.kv = kv
        self.catalog = catalog
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self._deadlines: dict[str, float] = {}

    # -- reads -------------------------------------------------------------------------------

    def get(self, session_id: str) -> Session | None:
        return self.store.record(tables.SESSIONS, session_id)

    def all(self) -> list[Session]:
        return self.store.records(tables.SESSIONS)

    def on_node(self, node: str) -> list[Session]:
        return [s for s in self.all() if s.node == node]

    # -- writes ------------------------------------------------------------------------------

    async def create(self, parsed: Session) -> Session:
        """Store a parsed session (``loom.domain.kv.parse_session``) under a new ID; its
        node and checks must exist, and no check may be critical (Consul's rules)."""
        async with self._lock:
            if not self._node_known(parsed.node):
                raise ValidationError(f"Missing node registration for {parsed.node!r}")
            for check_id, status in self._linked(parsed):
                if status is None:
                    raise ValidationError(f"Missing check '{check_id}' registration")
                if status == "critical":
                    raise ValidationError(f"Check '{check_id}' is in critical state")
            index = self.store.index + 1
            session = replace(parsed, id=str(uuid.uuid4()), create_index=index, modify_index=index)
            await self.store.apply([put(tables.SESSIONS, session.id, session)])
            self._arm(session)
            return session

    async def renew(self, session_id: str) -> Session:
        session = self.get(session_id)
        if session is None:
            raise NotFound(f"Session id '{session_id}' not found")
        self._arm(session)
        if self.store.kind == "etcd":  # the other servers' timers must see it
            async with self._lock:
                if self.get(session_id) is not None:
                    doc = {"At": self._wall()}
                    await self.store.apply([put(tables.SESSION_RENEWALS, session_id, doc)])
        return session

    async def destroy(self, session_id: str) -> None:
        """End a session now (an unknown one is no error, as in Consul)."""
        async with self._lock:
            await self._invalidate([session_id])

    async def sweep(self) -> int:
        """Invalidate the sessions whose time is up or whose health failed (periodic)."""
        now = self._clock()
        ended: list[str] = []
        for session in self.all():
            deadline = self._deadlines.setdefault(session.id, self._deadline(session))
            renewed = self.store.peek(tables.SESSION_RENEWALS.name, session.id)
            if renewed is not None:
                grace = session.ttl_s * self.settings.ttl_multiplier
                deadline = max(deadline, now + float(renewed["At"]) + grace - self._wall())
            expired = bool(session.ttl) and deadline <= now
            if expired or not self._healthy(session):
                ended.append(session.id)
        if not ended:
            return 0
        async with self._lock:
            return await self._invalidate(ended)

    # -- helpers -----------------------------------------------------------------------------

    def _deadline(self, session: Session) -> float:
        return self._clock() + session.ttl_s * self.settings.ttl_multiplier

    def _arm(self, session: Session) -> None:
        if session.ttl:
            self._deadlines[session.id] = self._deadline(session)

    def _node_known(self, node: str) -> bool:
        return (
            node == self.settings.node
            or self.store.peek(tables.NODES.name, node) is not None
            or node in self.catalog.services.by_node
        )

    def _healthy(self, session: Session) -> bool:
        """Its node is known and none of its checks is critical or gone."""
        if not self._node_known(session.node):
            return False
        return all(status not in (None, "critical") for _, status in self._linked(session))

    def _linked(self, session: Session) -> Iterable[tuple[str, str | None]]:
        """(check ID, status or None when missing) of every check the session names."""
        ids = [c for c in session.node_checks if c != SERF_HEALTH]
        ids += [c.id for c in session.service_checks]
        for check_id in ids:
            keys = self.catalog.checks.by_check_id.get((session.node, check_id))
            check = self.store.record(tables.CHECKS, min(keys)) if keys else None
            yield check_id, None if check is None else check.status

    async def _invalidate(self, session_ids: Iterable[str]) -> int:
        """Remove sessions and free (or delete) their keys, in one write; holds the lock."""
        ops: list[Op] = []
        index = self.store.index + 1
        freed: list[tuple[list[str], float]] = []
        for session_id in dict.fromkeys(session_ids):
            self._deadlines.pop(session_id, None)
            session = self.get(session_id)
            if session is None:
                continue
            ops.append(Delete(SESSIONS, session_id))
            if self.store.peek(tables.SESSION_RENEWALS.name, session_id) is not None:
                ops.append(Delete(tables.SESSION_RENEWALS.name, session_id))
            keys = sorted(self.kv.held.by_session.get(session_id, {}))
            for key in keys:
                entry = self.kv.get(key)
                if entry is None:
                    continue
                if session.behavior == DELETE:
                    ops.append(Delete(tables.KV.name, key))
                    ops.append(put(tables.KV_TOMBSTONES, key, {"Index": index}))
                else:
                    released = replace(entry, session="", modify_index=index)
                    ops.append(put(tables.KV, key, released))
            freed.append((keys, session.lock_delay_s))
        if not ops:
            return self.store.index
        written = await self.store.apply(ops)
        for keys, delay in freed:
            self.kv.delay(keys, delay)
        return written


__all__ = ["SessionSettings", "Sessions"]
