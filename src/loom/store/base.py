"""The store interface and the in-memory view every backend shares.

State is a set of tables, each a map from string key to a value: a typed record for the
tables ``loom.store.tables`` gives a codec (encoded to a JSON document only when persisted),
else a JSON-able dict. A write is a list of
``Put``/``Delete`` operations applied atomically under one new index (like Consul's Raft index).
Each table remembers the index of its last change, so a blocking query on "services" does not
wake for an intention write. Reads never touch the backend: the whole state lives in memory
(it is small: a mesh of 10,000 instances is a few tens of MB), and backends persist each
transaction before the write is acknowledged.

Secondary indexes (``Indexer``) attach to a table and are told of every change as it is
applied to the view - local writes, other servers' writes seen through the etcd watch, and
whole reloads - so a caller can look documents up by something other than their key without
scanning the table.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from loom.errors import LoomError
from loom.store.tables import TABLES, Table, decode

Doc = dict[str, Any]
T = TypeVar("T")


class StoreError(LoomError):
    """The backend could not open, read or persist state."""


class StoreConflict(StoreError):
    """Another server sharing the store committed first (etcd); the view has caught up, so
    re-running the whole write (validation included) can succeed."""


@dataclass(frozen=True)
class Put:
    table: str
    key: str
    value: Any
    """A record of the table's type (see ``loom.store.tables``), or its stored document."""


def put(table: Table[T], key: str, value: T) -> Put:
    """A type-checked ``Put`` of a record into a typed table."""
    return Put(table.name, key, value)


@dataclass(frozen=True)
class Delete:
    table: str
    key: str


Op = Put | Delete


class Indexer(Protocol):
    """A secondary index over one table, kept in step with the view by the store."""

    def reset(self, docs: Mapping[str, Any]) -> None:
        """Forget everything and index ``docs`` (attach time, and after a full reload)."""

    def put(self, key: str, old: Any, new: Any) -> None:
        """``key`` now holds ``new`` (``old`` is what it held, None when it was absent)."""

    def delete(self, key: str, old: Any) -> None:
        """``key``, which held ``old``, is gone."""


class Store:
    """In-memory view + change notification; subclasses make transactions durable."""

    kind = "memory"

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Any]] = {}
        self._table_index: dict[str, int] = {}
        self._index = 0
        self._changed = asyncio.Event()
        self._indexers: dict[str, list[Indexer]] = {}
        self._sorted: dict[str, tuple[int, list[tuple[str, Any]]]] = {}
        self._keys: dict[str, list[str]] = {}  # per table, kept sorted as keys come and go
        self._loaded_index: dict[str, int] = {}  # per table, its index when last loaded

    def attach(self, table: str, indexer: Indexer) -> None:
        """Keep ``indexer`` in step with ``table`` from now on, starting from its contents."""
        self._indexers.setdefault(table, []).append(indexer)
        indexer.reset(self._tables.get(table, {}))

    def _reset_indexers(self) -> None:
        """The view was replaced wholesale (a reload): every index starts over."""
        self._sorted.clear()
        self._keys.clear()
        for table, indexers in self._indexers.items():
            for indexer in indexers:
                indexer.reset(self._tables.get(table, {}))

    # -- reads -----------------------------------------------------------------------------

    @property
    def index(self) -> int:
        """The index of the last committed write (0 for an empty store)."""
        return self._index

    def table_index(self, tables: Iterable[str]) -> int:
        """The highest index at which any of ``tables`` changed (at least 1)."""
        return max([1, *(self._table_index.get(t, 0) for t in tables)])

    def legacy_index(self, table: str) -> int:
        """The index shown for a record of ``table`` stored before per-entry indexes were
        kept (its indexes are 0): the table's index when the store was loaded (at least 1),
        which no later write moves."""
        return max(1, self._loaded_index.get(table, 0))

    def _loaded(self) -> None:
        """The view was just loaded from the backend: remember each table's index."""
        self._loaded_index = dict(self._table_index)

    def get(self, table: str, key: str) -> Any:
        """The value at ``key`` (None when absent); documents are copied, the caller's to
        change (records are immutable)."""
        value = self._tables.get(table, {}).get(key)
        return copy.deepcopy(value) if isinstance(value, dict) else value

    def peek(self, table: str, key: str) -> Any:
        """The store's own value at ``key`` (no copy): do not mutate it."""
        return self._tables.get(table, {}).get(key)

    def record(self, table: Table[T], key: str) -> T | None:
        """The record at ``key`` of a typed table, or None."""
        value: T | None = self._tables.get(table.name, {}).get(key)
        return value

    def records(self, table: Table[T]) -> list[T]:
        """Every record of a typed table, in key order."""
        values: list[T] = self.values(table.name)
        return values

    def items(self, table: str) -> list[tuple[str, Any]]:
        """(key, doc) pairs sorted by key; docs are the store's own: do not mutate them.

        The key order is maintained as keys are added and removed (never re-sorted), and the
        list is built once per change of the table, not once per call."""
        index = self._table_index.get(table, 0)
        cached = self._sorted.get(table)
        if cached is None or cached[0] != index:
            docs = self._tables.get(table, {})
            cached = (index, [(k, docs[k]) for k in self._sorted_keys(table)])
            self._sorted[table] = cached
        return list(cached[1])

    def _sorted_keys(self, table: str) -> list[str]:
        keys = self._keys.get(table)
        if keys is None:  # first use, or after a load
            keys = self._keys[table] = sorted(self._tables.get(table, {}))
        return keys

    def values(self, table: str) -> list[Any]:
        """The values in key order (no (key, value) pairs made: cheap on large tables)."""
        docs = self._tables.get(table, {})
        return [docs[k] for k in self._sorted_keys(table)]

    # -- writes ----------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> int:
        """Commit ``ops`` atomically; returns the new index. Empty ``ops`` commit nothing."""
        if not ops:
            return self._index
        index = self._index + 1
        ops = self._stamp(ops, index)
        await self._persist(ops, index)
        self._apply_in_memory(ops, index)
        return index

    def _stamp(self, ops: Sequence[Op], index: int) -> list[Op]:
        """``ops`` with each record put into a table with per-entry indexes stamped against
        what the key holds before the transaction (a delete and a put of the same unchanged
        record in one transaction, as a re-registration does, keeps its indexes)."""
        out: list[Op] = []
        for op in ops:
            codec = TABLES.get(op.table)
            stamp = codec.stamp if codec is not None else None
            if isinstance(op, Put) and stamp is not None and not isinstance(op.value, dict):
                old = self._tables.get(op.table, {}).get(op.key)
                op = Put(op.table, op.key, stamp(old, op.value, index, self.legacy_index(op.table)))
            out.append(op)
        return out

    def _apply_in_memory(self, ops: Sequence[Op], index: int) -> None:
        for op in ops:
            table = self._tables.setdefault(op.table, {})
            indexers = self._indexers.get(op.table, ())
            old = table.get(op.key)
            if isinstance(op, Put):
                value = op.value
                if isinstance(value, dict):  # stored form (the etcd watch, callers) or untyped
                    value = decode(op.table, copy.deepcopy(value))
                if old is None and op.table in self._keys:
                    bisect.insort(self._keys[op.table], op.key)
                new = table[op.key] = value
                for indexer in indexers:
                    indexer.put(op.key, old, new)
            elif old is not None:
                del table[op.key]
                if op.table in self._keys:
                    keys = self._keys[op.table]
                    del keys[bisect.bisect_left(keys, op.key)]
                for indexer in indexers:
                    indexer.delete(op.key, old)
            self._table_index[op.table] = index
            self._sorted.pop(op.table, None)
        self._index = index
        self._changed.set()
        self._changed = asyncio.Event()

    async def _persist(self, ops: Sequence[Op], index: int) -> None:
        """Make the transaction durable before it is visible. Memory: nothing to do."""

    # -- watching --------------------------------------------------------------------------

    async def wait(self, tables: Iterable[str], after: int, timeout: float) -> int:
        """Block until one of ``tables`` changes past index ``after`` or ``timeout`` passes.

        Returns the tables' index at return time (unchanged on timeout).
        """
        names = tuple(tables)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.table_index(names) <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        return self.table_index(names)

    async def changed(self) -> None:
        """Wait for the next committed write (any table)."""
        await self._changed.wait()

    async def open(self) -> None:
        """Connect and load, for backends that need the event loop (etcd). Memory: nothing."""

    async def sync(self) -> None:
        """Bring the view up to date with writes through other servers (etcd) before a
        read-validate-write. Single-server backends are always up to date."""

    async def close(self) -> None:
        """Release backend resources."""
