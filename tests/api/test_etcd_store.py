"""The etcd store on a real etcd: atomic indexed transactions, reload, and two real `loom server`
processes sharing one etcd (HA): each sees, waits on and enforces the other's writes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from loom.store import Delete, Put, StoreConflict, StoreError
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
def prefix() -> str:
    """Each test its own key prefix: one etcd serves the module, states never mix."""
    return f"/loom-test-{uuid.uuid4().hex[:8]}/"


async def open_store(etcd: EtcdProcess, prefix: str) -> EtcdStore:
    store = EtcdStore(EtcdSettings((etcd.endpoint,), prefix))
    await store.open()
    return store


# -- store level ---------------------------------------------------------------------------


async def test_a_transaction_commits_all_its_operations_under_one_new_index(
    etcd: EtcdProcess, prefix: str
) -> None:
    store = await open_store(etcd, prefix)
    try:
        assert store.index == 0
        one = await store.apply([Put("things", "a", {"n": 1}), Put("other", "c", {"s": "ok"})])
        two = await store.apply([Put("things", "b", {"n": 2}), Delete("things", "a")])
        three = await store.apply([Put("other", "c", {"s": "critical"})])
        assert (one, two, three) == (1, 2, 3)
        assert store.index == 3
        assert store.items("things") == [("b", {"n": 2})]
        assert store.table_index(["things"]) == 2
        assert store.table_index(["other"]) == 3
        assert store.table_index(["nodes"]) == 1
        assert await store.apply([]) == 3
    finally:
        await store.close()


async def test_a_fresh_store_on_the_same_prefix_loads_everything(
    etcd: EtcdProcess, prefix: str
) -> None:
    first = await open_store(etcd, prefix)
    try:
        for n in range(1500):  # more than one page of the paged load
            await first.apply([Put("things", f"default/svc-{n:04}", {"Port": n})])
        await first.apply(
            [Put("notes", "k", {"v": [1, "x"]}), Delete("things", "default/svc-0000")]
        )
    finally:
        await first.close()
    again = await open_store(etcd, prefix)
    try:
        assert again.index == 1501
        assert len(again.items("things")) == 1499
        assert again.get("things", "default/svc-1499") == {"Port": 1499}
        assert again.get("things", "default/svc-0000") is None
        assert again.get("notes", "k") == {"v": [1, "x"]}
        assert again.table_index(["things"]) == 1501
        assert again.table_index(["notes"]) == 1501
        assert await again.apply([Put("notes", "k2", {})]) == 1502
    finally:
        await again.close()


async def test_a_write_through_one_store_wakes_a_waiter_on_another(
    etcd: EtcdProcess, prefix: str
) -> None:
    a, b = await open_store(etcd, prefix), await open_store(etcd, prefix)
    try:
        waiter = asyncio.create_task(b.wait(["things"], after=1, timeout=10))
        await a.apply([Put("intentions", "i", {"Action": "deny"})])
        async with asyncio.timeout(10):  # b has seen that write: had it woken the waiter,
            while b.table_index(["intentions"]) != 1:  # that would return 1, not 2, below
                await asyncio.sleep(0.01)
        assert not waiter.done()  # another table's write does not wake it
        index = await a.apply([Put("things", "web", {"Port": 80})])
        assert await asyncio.wait_for(waiter, 10) == index == 2
        assert b.get("things", "web") == {"Port": 80}
        assert b.index == a.index == 2
        assert b.table_index(["intentions"]) == 1
    finally:
        await a.close()
        await b.close()


async def test_of_two_concurrent_writes_from_the_same_view_one_is_a_conflict(
    etcd: EtcdProcess, prefix: str
) -> None:
    a, b = await open_store(etcd, prefix), await open_store(etcd, prefix)
    try:
        # Both transactions are built before either commits: etcd accepts exactly one.
        results = await asyncio.gather(
            a.apply([Put("vips", "web", {"Address": "240.0.0.1"})]),
            b.apply([Put("vips", "api", {"Address": "240.0.0.1"})]),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["StoreConflict", "int"]
        loser = a if isinstance(results[0], StoreConflict) else b
        assert loser.index == 1  # the loser's view has caught up with the winner's write
        assert len(loser.items("vips")) == 1
        await loser.sync()
        assert await loser.apply([Put("vips", "db", {"Address": "240.0.0.2"})]) == 2
        await a.sync()
        await b.sync()
        assert a.items("vips") == b.items("vips")
        assert len(a.items("vips")) == 2
    finally:
        await a.close()
        await b.close()


async def test_an_unreachable_etcd_is_a_one_line_store_error() -> None:
    store = EtcdStore(EtcdSettings(("127.0.0.1:1",), "/loom/", timeout_s=3.0))
    with pytest.raises(StoreError) as err:
        await store.open()
    assert str(err.value).startswith("cannot reach etcd at 127.0.0.1:1: ")
    assert "\n" not in str(err.value)


# -- two real servers sharing one etcd -----------------------------------------------------


def start_etcd_server(etcd: EtcdProcess, prefix: str) -> ServerProcess:
    return ServerProcess(
        ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix,
         "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]
    ).start()  # fmt: skip


@pytest.fixture
def pair(etcd: EtcdProcess, prefix: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    # Started at the same time on an empty prefix: both race to create the CA root.
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start_etcd_server, etcd, prefix) for _ in range(2)]
        errors = [f.exception() for f in futures]
    servers = [f.result() for f, e in zip(futures, errors, strict=True) if e is None]
    try:
        assert not any(errors), errors
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def register(server: ServerProcess, name: str, port: int) -> None:
    server.put("/v1/agent/service/register",
               {"Name": name, "Port": port, "Connect": {"SidecarService": {}}})  # fmt: skip


def eventually(read: Callable[[], Any], expect: Callable[[Any], bool]) -> Any:
    """Poll ``read`` until ``expect`` holds (bounded): a server's reads come from its view,
    which follows writes through another server after the watch delivers them (ms)."""
    deadline = time.monotonic() + 5.0
    while True:
        value = read()
        if expect(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def index_of(server: ServerProcess, path: str) -> int:
    return int(server.request("GET", path)[2]["X-Consul-Index"])


def test_a_registration_through_one_server_is_seen_and_removable_through_the_other(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    root = a.get("/v1/connect/ca/roots")["Roots"][0]["RootCert"]
    assert b.get("/v1/connect/ca/roots")["Roots"][0]["RootCert"] == root  # one shared CA
    register(a, "web", 8080)
    [inst] = eventually(lambda: b.get("/v1/catalog/service/web"), bool)
    assert inst["ServicePort"] == 8080
    assert (
        inst["ServiceTaggedAddresses"]["virtual"]
        == (a.get("/v1/catalog/service/web")[0]["ServiceTaggedAddresses"]["virtual"])
    )
    index = index_of(a, "/v1/catalog/services")
    assert eventually(lambda: index_of(b, "/v1/catalog/services"), lambda i: i == index) == index
    b.put("/v1/agent/service/deregister/web")  # validated against A's registration
    assert eventually(lambda: a.get("/v1/catalog/service/web"), lambda r: r == []) == []


def test_a_blocking_query_on_one_server_wakes_on_a_write_through_the_other(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    register(a, "api", 9000)
    eventually(lambda: b.get("/v1/catalog/service/api"), bool)
    index = index_of(b, "/v1/health/service/db")
    out: dict[str, Any] = {}

    def block() -> None:
        out["resp"] = b.request("GET", f"/v1/health/service/db?index={index}&wait=20s")

    waiter = threading.Thread(target=block)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # blocked: nothing changed yet
    register(a, "db", 5432)
    waiter.join(15)
    assert not waiter.is_alive()
    status, body, headers = out["resp"]
    assert status == 200
    assert [e["Service"]["Service"] for e in body] == ["db"]
    assert int(headers["X-Consul-Index"]) > index


def test_an_intention_written_through_one_server_is_enforced_by_the_other(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    check = "/v1/connect/intentions/check?source=web&destination=db"
    assert b.get(check)["Allowed"] is True
    a.put("/v1/connect/intentions/exact?source=web&destination=db", {"Action": "deny"})
    assert eventually(lambda: b.get(check), lambda c: not c["Allowed"]) == {
        "Allowed": False,
        "Reason": "matched intention web => db (deny)",
    }
    b.request("DELETE", "/v1/connect/intentions/exact?source=web&destination=db")
    assert eventually(lambda: a.get(check), lambda c: c["Allowed"])["Allowed"] is True


def test_sigkill_of_one_server_loses_nothing_it_acknowledged(
    pair: tuple[ServerProcess, ServerProcess], etcd: EtcdProcess, prefix: str
) -> None:
    a, b = pair
    for n in range(20):
        register(a, f"svc-{n}", 1000 + n)
    a.put("/v1/config", {"Kind": "service-defaults", "Name": "svc-3", "Protocol": "http"})
    index = index_of(a, "/v1/catalog/services")
    a.kill()  # SIGKILL right after the last acknowledgement
    services = eventually(lambda: b.get("/v1/agent/services"), lambda s: len(s) == 40)
    assert len(services) == 40  # 20 services + their sidecars
    assert b.get("/v1/config/service-defaults/svc-3")["Protocol"] == "http"
    fresh = start_etcd_server(etcd, prefix)
    try:
        assert len(fresh.get("/v1/catalog/services")) == 41  # and the server's consul service
        assert index_of(fresh, "/v1/catalog/services") == index
        register(fresh, "after", 1)
        assert eventually(lambda: index_of(b, "/v1/catalog/services"), lambda i: i > index) > index
    finally:
        fresh.stop()


def test_an_unreachable_etcd_endpoint_is_one_line_and_exit_1(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "server", "--etcd-endpoints", "127.0.0.1:1",
         "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("loom: cannot reach etcd at 127.0.0.1:1: ")
    assert out.stderr.count("\n") == 1, out.stderr


def test_etcd_endpoints_exclude_the_other_stores(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "server", "--dev", "--etcd-endpoints", "127.0.0.1:2379"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert "not allowed with argument" in out.stderr
