"""Snapshots of the whole state: take one, restore one (``/v1/snapshot``, ``loom snapshot``).

``take`` reads every table at one index (under the write lock, so with etcd the view has
caught up with every acknowledged write first) into the file format of
``loom.store.archive``. ``restore`` checks the whole file before taking the lock (a corrupt,
truncated or foreign file is an ``ArchiveError`` and changes nothing), then replaces the state
in one store transaction: keys absent from the snapshot are deleted, documents that differ are
written. One transaction means all-or-nothing on every backend, and one new index, so
blocking queries wake and the xDS hub pushes the restored configuration like after any write.
"""

from __future__ import annotations

from dataclasses import dataclass

from loom.control.state import State
from loom.store import Delete, Op, Put
from loom.store.archive import read_archive, write_archive
from loom.store.tables import META, TABLES, encode


@dataclass(frozen=True)
class Restored:
    """What a restore did."""

    index: int
    """The store index the restore committed at."""
    documents: int
    """Documents in the snapshot."""
    changed: int
    """Documents written or deleted (the rest were already equal)."""


async def take(state: State) -> tuple[int, bytes]:
    """(index, snapshot file) of the current state."""
    store = state.store
    async with state.lock:
        index = store.index
        tables = {name: dict(store.items(name)) for name in TABLES}
    return index, write_archive(index, tables)


async def restore(state: State, blob: bytes) -> Restored:
    """Replace the state by the snapshot in ``blob`` (see the module docstring)."""
    archive = read_archive(blob)
    store = state.store
    async with state.lock:
        ops: list[Op] = []
        for name in TABLES:
            wanted = archive.tables.get(name, {})
            for key, value in store.items(name):
                if key not in wanted:
                    ops.append(Delete(name, key))
                elif encode(name, value) != wanted[key]:
                    ops.append(Put(name, key, wanted[key]))
            have = {key for key, _ in store.items(name)}
            ops.extend(Put(name, key, doc) for key, doc in wanted.items() if key not in have)
        changed = len(ops)
        if not ops:  # already equal: still one index, so a restore is always seen
            cluster = store.record(META, "cluster")
            if cluster is not None:
                ops.append(Put(META.name, "cluster", META.encode(cluster)))
        index = await store.apply(ops)
    return Restored(index, archive.count(), changed)


__all__ = ["Restored", "restore", "take"]
