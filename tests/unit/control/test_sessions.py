"""Sessions and locks over a real store (memory and SQLite) with a clock the test turns:
TTL expiry at twice the TTL, renew, lock delay after invalidation, behavior delete, linked
checks, and TTLs that start over when a server opens the same data again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from loom.control.catalog import Catalog, CatalogSettings
from loom.control.kv import Kv
from loom.control.sessions import Sessions, SessionSettings
from loom.domain.kv import KvOp, parse_session
from loom.store import Store
from loom.store.sqlite import SqliteStore

NODE = "loom-server"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self, store: Store, clock: Clock) -> None:
        lock = asyncio.Lock()
        self.store, self.clock = store, clock
        self.catalog = Catalog(store, CatalogSettings(NODE, "127.0.0.1", "dc1"), lock, clock)
        self.kv = Kv(store, lock, clock)
        self.sessions = Sessions(store, lock, self.kv, self.catalog, SessionSettings(NODE), clock)

    async def session(self, **body: object) -> str:
        return (await self.sessions.create(parse_session(body, NODE))).id

    async def lock(self, key: str, session: str) -> bool:
        return (await self.kv.apply([KvOp("lock", key, b"v", session=session)])).ok


async def test_a_ttl_session_ends_after_twice_its_ttl_unless_renewed() -> None:
    w = World(Store(), Clock())
    sid = await w.session(TTL="10s")
    assert await w.lock("job", sid)
    w.clock.now += 15
    await w.sessions.sweep()
    assert w.sessions.get(sid) is not None  # past the TTL, within Consul's 2x grace
    await w.sessions.renew(sid)
    w.clock.now += 19
    await w.sessions.sweep()
    assert w.sessions.get(sid) is not None  # renewed 19 s ago
    w.clock.now += 2
    await w.sessions.sweep()
    assert w.sessions.get(sid) is None
    entry = w.kv.get("job")
    assert entry is not None and entry.session == "" and entry.lock_index == 1


async def test_a_freed_lock_waits_out_the_lock_delay() -> None:
    w = World(Store(), Clock())
    holder, other = await w.session(LockDelay="15s"), await w.session()
    assert await w.lock("leader", holder)
    await w.sessions.destroy(holder)
    assert not await w.lock("leader", other)
    w.clock.now += 14.9
    assert not await w.lock("leader", other)
    w.clock.now += 0.2
    assert await w.lock("leader", other)


async def test_a_voluntary_release_has_no_lock_delay() -> None:
    w = World(Store(), Clock())
    holder, other = await w.session(LockDelay="15s"), await w.session()
    assert await w.lock("leader", holder)
    assert (await w.kv.apply([KvOp("unlock", "leader", None, session=holder)])).ok
    assert await w.lock("leader", other)


async def test_a_delete_session_takes_its_keys_with_it_and_leaves_tombstones() -> None:
    w = World(Store(), Clock())
    sid = await w.session(Behavior="delete")
    assert await w.lock("ephemeral/a", sid)
    before = w.kv.prefix_index("ephemeral/")
    await w.sessions.destroy(sid)
    assert w.kv.get("ephemeral/a") is None
    assert w.kv.prefix_index("ephemeral/") > before  # the deletion moved the prefix's index


async def test_a_critical_linked_check_ends_the_session() -> None:
    w = World(Store(), Clock())
    await w.catalog.agent_register({"Name": "web", "Port": 80, "Check": {"TTL": "30s"}})
    await w.catalog.update_check("service:web", "passing", "")
    sid = await w.session(Checks=["service:web"])
    assert await w.lock("web/leader", sid)
    await w.sessions.sweep()
    assert w.sessions.get(sid) is not None
    await w.catalog.update_check("service:web", "critical", "down")
    await w.sessions.sweep()
    assert w.sessions.get(sid) is None
    entry = w.kv.get("web/leader")
    assert entry is not None and entry.session == ""


async def test_a_deregistered_check_ends_the_session_too() -> None:
    w = World(Store(), Clock())
    await w.catalog.agent_register({"Name": "api", "Port": 81, "Check": {"TTL": "30s"}})
    await w.catalog.update_check("service:api", "passing", "")
    sid = await w.session(Checks=["service:api"])
    await w.catalog.agent_deregister("api")
    await w.sessions.sweep()
    assert w.sessions.get(sid) is None


async def test_ttls_start_over_when_the_data_is_opened_again(tmp_path: Path) -> None:
    clock = Clock()
    first = World(SqliteStore(tmp_path), clock)
    sid = await first.session(TTL="10s")
    assert await first.lock("kept", sid)
    await first.store.close()
    clock.now += 3600  # the server was down for an hour
    second = World(SqliteStore(tmp_path), clock)
    try:
        await second.sessions.sweep()
        assert second.sessions.get(sid) is not None  # the TTL restarted at open
        entry = second.kv.get("kept")
        assert entry is not None and entry.session == sid
        assert second.kv.held.by_session == {sid: {"kept": None}}
        clock.now += 21
        await second.sessions.sweep()
        assert second.sessions.get(sid) is None
    finally:
        await second.store.close()


async def test_a_blocking_wait_on_one_key_ignores_writes_to_others() -> None:
    w = World(Store(), Clock())
    await w.kv.apply([KvOp("set", "a", b"1")])
    index = w.kv.key_index("a")
    waiter = asyncio.ensure_future(w.kv.wait(lambda: w.kv.key_index("a"), index, 30))
    await w.kv.apply([KvOp("set", "b", b"1")])
    for _ in range(10):  # let the waiter see the write to b (it must not return for it)
        await asyncio.sleep(0)
    assert not waiter.done()
    await w.kv.apply([KvOp("set", "a", b"2")])
    assert await asyncio.wait_for(waiter, 5) > index
