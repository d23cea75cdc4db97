"""KV and sessions on a real etcd shared by two servers: a write through one is read (and
woken on) through the other, a lock taken through one holds against the other, and a renew
through one keeps the other's TTL timer from ending the session."""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from loom.control.catalog import Catalog, CatalogSettings
from loom.control.kv import Kv
from loom.control.sessions import Sessions, SessionSettings
from loom.control.state import WriteLock
from loom.domain.kv import parse_session
from loom.store.etcd import EtcdSettings, EtcdStore
from tests.support.etcd import EtcdProcess, etcd_missing_reason
from tests.support.server import ServerProcess

pytestmark = pytest.mark.skipif(
    etcd_missing_reason() is not None, reason=str(etcd_missing_reason())
)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    proc = EtcdProcess(tmp_path_factory.mktemp("etcd") / "data").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def pair(etcd: EtcdProcess) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    prefix = f"/loom-kv-{uuid.uuid4().hex[:8]}/"
    servers: list[ServerProcess] = []
    try:
        for _ in range(2):
            servers.append(ServerProcess(["--etcd-endpoints", etcd.endpoint, "--etcd-prefix",
                                          prefix, "--http-addr", "127.0.0.1:0", "--grpc-addr",
                                          "127.0.0.1:0"]).start())  # fmt: skip
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def test_a_write_through_one_server_wakes_a_reader_of_the_other(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    assert a.put("/v1/kv/shared/k", b"one") is True
    status, [entry], headers = b.request("GET", "/v1/kv/shared/k")
    assert status == 200 and base64.b64decode(entry["Value"]) == b"one"
    got: list[Any] = []
    index = headers["X-Consul-Index"]
    watcher = threading.Thread(
        target=lambda: got.append(b.get(f"/v1/kv/shared/k?index={index}&wait=15s"))
    )
    watcher.start()
    a.put("/v1/kv/shared/k", b"two")
    watcher.join(timeout=20)
    assert base64.b64decode(got[0][0]["Value"]) == b"two"


def test_a_lock_through_one_server_holds_against_the_other(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    mine = a.put("/v1/session/create", {"Name": "a"})["ID"]
    theirs = b.put("/v1/session/create", {"Name": "b"})["ID"]
    assert a.put(f"/v1/kv/shared/lock?acquire={mine}") is True
    assert b.put(f"/v1/kv/shared/lock?acquire={theirs}") is False
    assert b.put("/v1/kv/shared/lock?cas=0") is False
    [info] = b.get(f"/v1/session/info/{mine}")
    assert info["ID"] == mine


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_renew_through_one_server_keeps_the_other_from_ending_the_session(
    etcd: EtcdProcess,
) -> None:
    prefix = f"/loom-kv-{uuid.uuid4().hex[:8]}/"
    mono, wall = Clock(100.0), Clock(1_800_000_000.0)
    worlds = []
    for _ in range(2):
        store = EtcdStore(EtcdSettings((etcd.endpoint,), prefix))
        await store.open()
        lock = WriteLock(store)
        catalog = Catalog(store, CatalogSettings("loom-server", "127.0.0.1", "dc1"), lock, mono)
        kv = Kv(store, lock, mono)
        sessions = Sessions(store, lock, kv, catalog, SessionSettings("loom-server"), mono, wall)
        worlds.append((store, sessions))
    (one_store, one), (two_store, two) = worlds
    try:
        sid = (await one.create(parse_session({"TTL": "10s"}, "loom-server"))).id
        await two_store.sync()
        await two.sweep()  # the other server's timer starts: 20 s from now
        for _ in range(3):  # 15 s apart, each renewed through the first server
            mono.now += 15
            wall.now += 15
            await one.renew(sid)
            await two_store.sync()  # the renew, written through the first, is in this view
            assert two_store.peek("session_renewals", sid) == {"At": wall.now}
            await two.sweep()
            assert two.get(sid) is not None
        mono.now += 21
        wall.now += 21
        await two.sweep()
        assert two.get(sid) is None
    finally:
        await one_store.close()
        await two_store.close()
