"""KV tombstones are reaped after their TTL, in batches, and a key's or prefix's index never
goes backwards for it (Consul's graveyard index), over a real in-memory and SQLite store
with a clock the test moves."""

from __future__ import annotations

import asyncio
from pathlib import Path

from loom.control.kv import Kv
from loom.domain.kv import KvOp
from loom.store import Store
from loom.store.sqlite import SqliteStore
from loom.store.tables import KV_TOMBSTONES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _kv(store: Store, clock: Clock) -> Kv:
    return Kv(store, asyncio.Lock(), clock, tombstone_ttl_s=60.0, granularity_s=10.0)


async def _write(kv: Kv, *ops: KvOp) -> int:
    outcome = await kv.apply(list(ops))
    assert outcome.ok
    return outcome.index


async def test_a_tombstone_is_kept_until_its_ttl_then_reaped() -> None:
    clock, store = Clock(), Store()
    kv = _kv(store, clock)
    await _write(kv, KvOp("set", "app/a", b"1"))
    deleted = await _write(kv, KvOp("delete", "app/a"))
    clock.now += 59.0
    assert await kv.reap_tombstones() == deleted  # not yet: nothing written
    assert store.peek(KV_TOMBSTONES.name, "app/a") is not None
    clock.now += 11.0  # past the TTL and its batch's slot
    reaped = await kv.reap_tombstones()
    assert reaped > deleted and store.peek(KV_TOMBSTONES.name, "app/a") is None


async def test_no_index_goes_backwards_when_its_tombstone_is_reaped() -> None:
    clock, store = Clock(), Store()
    kv = _kv(store, clock)
    await _write(kv, KvOp("set", "app/a", b"1"), KvOp("set", "app/b", b"1"))
    deleted = await _write(kv, KvOp("delete", "app/a"))
    before = (kv.key_index("app/a"), kv.prefix_index("app/"), kv.key_index("never"))
    assert before == (deleted, deleted, 1)
    clock.now += 100.0
    await kv.reap_tombstones()
    # the deleted key and its prefix keep the deletion's index; a key never written reports
    # the graveyard's, which only grows
    assert (kv.key_index("app/a"), kv.prefix_index("app/")) == (deleted, deleted)
    assert kv.key_index("never") == deleted


async def test_a_watcher_of_a_deleted_key_stays_parked_through_the_reap_and_wakes_on_a_write() -> None:
    clock, store = Clock(), Store()
    kv = _kv(store, clock)
    await _write(kv, KvOp("set", "app/a", b"1"))
    deleted = await _write(kv, KvOp("delete", "app/a"))
    watcher = asyncio.create_task(kv.wait(lambda: kv.key_index("app/a"), deleted, 30.0))
    await asyncio.sleep(0)
    clock.now += 100.0
    reaped = await kv.reap_tombstones()
    assert reaped > deleted
    await asyncio.sleep(0)  # the store's change event has been handled by the watcher
    assert not watcher.done()
    written = await _write(kv, KvOp("set", "app/a", b"2"))
    assert await asyncio.wait_for(watcher, 5.0) == written


async def test_deletions_in_one_slot_are_reaped_together_and_later_ones_wait() -> None:
    clock, store = Clock(), Store()
    kv = _kv(store, clock)
    await _write(kv, *(KvOp("set", f"k{n}", b"v") for n in range(3)))
    await _write(kv, KvOp("delete", "k0"))
    await _write(kv, KvOp("delete", "k1"))
    clock.now += 30.0
    await _write(kv, KvOp("delete", "k2"))
    assert len(kv.hints.batches) == 2
    clock.now += 40.0  # the first slot is due, the second not
    await kv.reap_tombstones()
    assert kv.tombstones.under("") == ["k2"]


async def test_the_graveyard_index_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    store = SqliteStore(tmp_path)
    kv = _kv(store, clock)
    await _write(kv, KvOp("set", "a", b"1"))
    deleted = await _write(kv, KvOp("delete", "a"))
    clock.now += 100.0
    await kv.reap_tombstones()
    await store.close()
    store = SqliteStore(tmp_path)
    try:
        assert _kv(store, clock).key_index("a") == deleted
    finally:
        await store.close()
