"""The KV store: reads, blocking waits per key or prefix, and one transaction engine.

Every KV write is a transaction of ``loom.domain.kv.KvOp`` values: ``PUT /v1/kv/k?cas=3``
is ``[KvOp("cas", "k", ...)]`` and ``/v1/txn`` is up to 64 of them. ``Kv.apply`` plans the
whole list against the view under the write lock (each op sees the ones before it), and
commits all of it in one store transaction, or nothing when any op fails, with Consul's
error texts. Deleted keys leave a tombstone (``kv_tombstones``) holding the index of their
deletion, so the index of a key or prefix - the highest ModifyIndex of its entries and
tombstones - moves on deletes too.

Blocking queries on KV wait on that per-key/per-prefix index (``Kv.wait``), not on the
table's: a watcher of ``config/web`` does not return for a write to ``config/db``. And since
KV lives in its own tables, a KV write wakes no catalog, config or xDS watcher for nothing.

Tombstones are reaped ``tombstone_ttl_s`` (Consul's ``tombstone_ttl``, 15 min) after their
deletion, in batches of ``granularity_s`` (Consul's 30 s ``tombstone_ttl_granularity``), by
``Kv.reap_tombstones``; the deletion times are hints kept in memory, as Consul's leader keeps
them (a restart starts their clock over). The highest index reaped is kept
(``kv_graveyard``), and a missing key or a prefix reports at least that index, so a blocking
query on a deleted key never sees its index go backwards: it stays parked through the reap
of its own tombstone and wakes when the key is written again.

Lock delay (Consul's ``LockDelay``) is kept in memory, as Consul keeps it: a key whose lock
was freed by an invalidated session cannot be locked again until the delay passes.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loom.domain.kv import KvEntry, KvOp
from loom.store import Delete, Op, Store, put, tables

KV = tables.KV.name
TOMBSTONES = tables.KV_TOMBSTONES.name
GRAVEYARD = tables.KV_GRAVEYARD.name
REAPED = "reaped"
Allowed = Callable[[KvOp], bool]
"""Whether the caller's token may run an op (ACLs); None: ACLs off."""
ReadAllowed = Callable[[str], bool]


class SortedKeys:
    """A table's keys in order, kept in step by the store (an ``Indexer``)."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def reset(self, docs: Mapping[str, Any]) -> None:
        self.keys = sorted(docs)

    def put(self, key: str, old: Any, new: Any) -> None:
        if old is None:
            bisect.insort(self.keys, key)

    def delete(self, key: str, old: Any) -> None:
        at = bisect.bisect_left(self.keys, key)
        if at < len(self.keys) and self.keys[at] == key:
            del self.keys[at]

    def under(self, prefix: str) -> list[str]:
        start = bisect.bisect_left(self.keys, prefix)
        out = []
        for key in self.keys[start:]:
            if not key.startswith(prefix):
                break
            out.append(key)
        return out


class HeldLocks:
    """Keys by the session holding their lock (an ``Indexer`` on the KV table)."""

    def __init__(self) -> None:
        self.by_session: dict[str, dict[str, None]] = {}

    def reset(self, docs: Mapping[str, KvEntry]) -> None:
        self.by_session = {}
        for key, entry in docs.items():
            self.put(key, None, entry)

    def put(self, key: str, old: KvEntry | None, new: KvEntry) -> None:
        if old is not None:
            self.delete(key, old)
        if new.session:
            self.by_session.setdefault(new.session, {})[key] = None

    def delete(self, key: str, old: KvEntry) -> None:
        held = self.by_session.get(old.session)
        if held is not None:
            held.pop(key, None)
            if not held:
                del self.by_session[old.session]


class TombstoneHints:
    """When each batch of tombstones may go: (deadline, highest deletion index) in deadline
    order, fed by the store as tombstones are written (an ``Indexer`` on ``kv_tombstones``)."""

    def __init__(self, clock: Callable[[], float], ttl_s: float, granularity_s: float) -> None:
        self._clock, self._ttl, self._granularity = clock, ttl_s, max(granularity_s, 1e-3)
        self.batches: list[tuple[float, int]] = []

    def _hint(self, index: int) -> None:
        due = self._clock() + self._ttl
        due = (int(due / self._granularity) + 1) * self._granularity  # one batch per slot
        if self.batches and self.batches[-1][0] >= due:
            deadline, top = self.batches[-1]
            self.batches[-1] = (deadline, max(top, index))
        else:
            self.batches.append((due, index))

    def reset(self, docs: Mapping[str, Any]) -> None:
        self.batches = []
        if docs:  # loaded: their deletion times are unknown, so their clock starts now
            self._hint(max(int(d["Index"]) for d in docs.values()))

    def put(self, key: str, old: Any, new: Any) -> None:
        self._hint(int(new["Index"]))

    def delete(self, key: str, old: Any) -> None:
        pass

    def due(self) -> int:
        """The highest deletion index whose batch is due (0: none), forgetting those batches."""
        now, top = self._clock(), 0
        while self.batches and self.batches[0][0] <= now:
            top = max(top, self.batches.pop(0)[1])
        return top


@dataclass(frozen=True)
class OpError:
    """Why one op failed (Consul's ``{"OpIndex", "What"}``)."""

    op_index: int
    what: str
    invalid_session: bool = False
    """The op named a session that does not exist (a 400 on ``?acquire=``, not ``false``)."""


@dataclass
class Outcome:
    """What a transaction did: results (entries) on success, errors (and no write) if not."""

    index: int
    results: list[KvEntry] = field(default_factory=list)
    errors: list[OpError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class _Plan:
    """The view as the ops so far have left it (pending writes over the store)."""

    def __init__(self, kv: Kv, index: int) -> None:
        self.kv, self.index = kv, index
        self.pending: dict[str, KvEntry | None] = {}

    def get(self, key: str) -> KvEntry | None:
        if key in self.pending:
            return self.pending[key]
        return self.kv.get(key)

    def under(self, prefix: str) -> list[KvEntry]:
        keys = set(self.kv.sorted.under(prefix))
        keys.update(k for k in self.pending if k.startswith(prefix))
        found = (self.get(k) for k in sorted(keys))
        return [e for e in found if e is not None]

    def write(self, old: KvEntry | None, key: str, **changes: Any) -> KvEntry:
        base = old if old is not None else KvEntry(key, None, create_index=self.index)
        new = replace(base, modify_index=self.index, **changes)
        self.pending[key] = new
        return new

    def delete(self, key: str) -> None:
        self.pending[key] = None

    def ops(self) -> list[Op]:
        out: list[Op] = []
        for key, entry in self.pending.items():
            if entry is None:
                if self.kv.get(key) is not None:
                    out += [Delete(KV, key), put(tables.KV_TOMBSTONES, key, {"Index": self.index})]
            else:
                out.append(put(tables.KV, key, entry))
                if self.kv.store.peek(TOMBSTONES, key) is not None:
                    out.append(Delete(TOMBSTONES, key))
        return out


def _q(text: str) -> str:
    """Quoted as Go's ``%q`` quotes (Consul's error texts): double quotes."""
    return json.dumps(text, ensure_ascii=False)


def _blank(entry: KvEntry) -> KvEntry:
    return replace(entry, value=None)


class Kv:
    def __init__(
        self,
        store: Store,
        lock: asyncio.Lock,
        clock: Callable[[], float],
        tombstone_ttl_s: float = 900.0,
        granularity_s: float = 30.0,
    ) -> None:
        self.store = store
        self._lock = lock
        self._clock = clock
        self.sorted = SortedKeys()
        self.tombstones = SortedKeys()
        self.held = HeldLocks()
        self.hints = TombstoneHints(clock, tombstone_ttl_s, min(granularity_s, tombstone_ttl_s))
        store.attach(KV, self.sorted)
        store.attach(KV, self.held)
        store.attach(TOMBSTONES, self.tombstones)
        store.attach(TOMBSTONES, self.hints)
        self._delays: dict[str, float] = {}

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> KvEntry | None:
        return self.store.record(tables.KV, key)

    def tree(self, prefix: str) -> list[KvEntry]:
        found = (self.store.record(tables.KV, k) for k in self.sorted.under(prefix))
        return [e for e in found if e is not None]

    def reaped(self) -> int:
        """The highest deletion index of the tombstones reaped so far (0: none)."""
        doc = self.store.peek(GRAVEYARD, REAPED)
        return int(doc["Index"]) if doc is not None else 0

    def key_index(self, key: str) -> int:
        """The index of one key: its ModifyIndex, else that of its deletion, else the reaped
        tombstones' (at least 1)."""
        entry = self.get(key)
        if entry is not None:
            return entry.modify_index
        tomb = self.store.peek(TOMBSTONES, key)
        return max(1, int(tomb["Index"])) if tomb is not None else max(1, self.reaped())

    def prefix_index(self, prefix: str) -> int:
        """The index of everything under ``prefix``: the last change of any entry under it,
        deletions included, reaped ones too (at least 1)."""
        best = max(1, self.reaped())
        for entry in self.tree(prefix):
            best = max(best, entry.modify_index)
        for key in self.tombstones.under(prefix):
            best = max(best, int(self.store.peek(TOMBSTONES, key)["Index"]))
        return best

    async def wait(self, current: Callable[[], int], after: int, timeout: float) -> int:
        """Block until ``current()`` passes ``after`` or ``timeout`` passes; its value then.

        Each round waits for the KV tables to move past the index they had when ``current``
        was read (no await in between), so a write landing meanwhile is never missed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := current()) <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return found
            await self.store.wait(
                tables.KV_TABLES, self.store.table_index(tables.KV_TABLES), remaining
            )
        return found

    async def reap_tombstones(self) -> int:
        """Remove the tombstones whose batch is due (run periodically); the store index."""
        top = self.hints.due()
        if not top:
            return self.store.index
        async with self._lock:
            gone = [
                k for k in self.tombstones.under("")
                if int(self.store.peek(TOMBSTONES, k)["Index"]) <= top
            ]  # fmt: skip
            if not gone:
                return self.store.index
            highest = max(int(self.store.peek(TOMBSTONES, k)["Index"]) for k in gone)
            ops: list[Op] = [Delete(TOMBSTONES, k) for k in gone]
            ops.append(put(tables.KV_GRAVEYARD, REAPED, {"Index": max(highest, self.reaped())}))
            return await self.store.apply(ops)

    # -- lock delay --------------------------------------------------------------------------

    def delay(self, keys: Iterable[str], seconds: float) -> None:
        """Refuse new locks on ``keys`` for ``seconds`` (a session holding them ended)."""
        if seconds <= 0:
            return
        until = self._clock() + seconds
        now = self._clock()
        self._delays = {k: t for k, t in self._delays.items() if t > now}
        for key in keys:
            self._delays[key] = max(until, self._delays.get(key, 0.0))

    def delayed(self, key: str) -> bool:
        return self._delays.get(key, 0.0) > self._clock()

    # -- writes ------------------------------------------------------------------------------

    async def apply(
        self,
        ops: Sequence[KvOp],
        allowed: Allowed | None = None,
        readable: ReadAllowed | None = None,
    ) -> Outcome:
        """Run ``ops`` as one transaction (see the module docstring). ``allowed`` vets each
        op (a refused one fails the transaction: ``Permission denied``); ``readable`` filters
        the entries ``get-tree`` returns, as Consul filters them by ``key:read``."""
        if all(op.reads_only for op in ops):
            return self._run(ops, self.store.index, allowed, readable)[0]
        async with self._lock:
            outcome, plan = self._run(ops, self.store.index + 1, allowed, readable)
            writes = plan.ops() if outcome.ok else []
            outcome.index = await self.store.apply(writes) if writes else self.store.index
            return outcome

    def _run(
        self,
        ops: Sequence[KvOp],
        index: int,
        allowed: Allowed | None,
        readable: ReadAllowed | None,
    ) -> tuple[Outcome, _Plan]:
        plan = self.plan(index)
        outcome = Outcome(index)
        for n, op in enumerate(ops):
            found, error = self.run_op(plan, n, op, allowed, readable)
            if error is not None:
                outcome.errors.append(error)
            outcome.results.extend(found)
        if outcome.errors:
            outcome.results = []
        return outcome, plan

    def plan(self, index: int) -> _Plan:
        """A transaction's pending view, to commit at ``index`` (``ops()`` once planned)."""
        return _Plan(self, index)

    def run_op(
        self,
        plan: _Plan,
        n: int,
        op: KvOp,
        allowed: Allowed | None,
        readable: ReadAllowed | None,
    ) -> tuple[list[KvEntry], OpError | None]:
        """Op ``n`` of a transaction planned over ``plan``: its results, or why it failed."""
        if allowed is not None and not allowed(op):
            return [], OpError(n, "Permission denied")
        found: list[KvEntry] = []
        error = self._step(plan, op, found)
        if op.verb == "get-tree" and readable is not None:
            found = [e for e in found if readable(e.key)]
        return found, replace(error, op_index=n) if error is not None else None

    def _step(self, plan: _Plan, op: KvOp, results: list[KvEntry]) -> OpError | None:
        key, old = op.key, plan.get(op.key)
        verb = op.verb
        if verb == "set":
            results.append(_blank(plan.write(old, key, value=op.value, flags=op.flags)))
        elif verb == "cas":
            if (op.index == 0 and old is not None) or (
                op.index != 0 and (old is None or old.modify_index != op.index)
            ):
                return OpError(0, f"failed to set key {_q(key)}, index is stale")
            results.append(_blank(plan.write(old, key, value=op.value, flags=op.flags)))
        elif verb == "lock":
            if self.store.record(tables.SESSIONS, op.session) is None:
                return OpError(0, f"failed to lock key {_q(key)}: invalid session {_q(op.session)}",
                               invalid_session=True)  # fmt: skip
            if old is not None and old.session == op.session:
                results.append(_blank(plan.write(old, key, value=op.value, flags=op.flags)))
                return None
            if old is not None and old.session:
                return OpError(0, f"failed to lock key {_q(key)}, lock is already held")
            if self.delayed(key):
                return OpError(0, f"failed to lock key {_q(key)} due to lock delay")
            lock_index = (old.lock_index if old else 0) + 1
            new = plan.write(old, key, value=op.value, flags=op.flags, session=op.session,
                             lock_index=lock_index)  # fmt: skip
            results.append(_blank(new))
        elif verb == "unlock":
            if old is None or old.session != op.session:
                return OpError(
                    0, f"failed to unlock key {_q(key)}, lock isn't held, or is held by another "
                    "session",
                )  # fmt: skip
            results.append(_blank(plan.write(old, key, value=op.value, flags=op.flags, session="")))
        elif verb == "get":
            if old is None:
                return OpError(0, f"key {_q(key)} doesn't exist")
            results.append(old)
        elif verb == "get-tree":
            results.extend(plan.under(key))
        elif verb in ("check-index", "check-session", "check-not-exists"):
            return self._check(op, old, results)
        elif verb == "delete":
            plan.delete(key)
        elif verb == "delete-tree":
            for entry in plan.under(key):
                plan.delete(entry.key)
        elif verb == "delete-cas":
            if old is not None and old.modify_index != op.index:
                return OpError(0, f"failed to delete key {_q(key)}, index is stale")
            plan.delete(key)
        return None

    def _check(self, op: KvOp, old: KvEntry | None, results: list[KvEntry]) -> OpError | None:
        key = op.key
        if op.verb == "check-not-exists":
            return OpError(0, f"key {_q(key)} exists") if old is not None else None
        if old is None:
            return OpError(0, f"key {_q(key)} doesn't exist")
        if op.verb == "check-index" and old.modify_index != op.index:
            return OpError(0, f"current modify index {old.modify_index} != {op.index}")
        if op.verb == "check-session" and old.session != op.session:
            return OpError(0, f"current session {_q(old.session)} != {_q(op.session)}")
        results.append(_blank(old))
        return None


__all__ = ["Kv", "OpError", "Outcome"]
