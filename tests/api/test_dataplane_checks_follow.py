"""A dataplane's check loop follows the server by blocking queries: it reads its checks again
when the catalog moved, and nothing while it did not (issue 17: agents polling every second
added half a millisecond to the p99 of the requests through their Envoy).

``run_checks`` of ``loom.dataplane.checks`` runs here against a real ``loom server`` with a
1.5 s dataplane deadline (a heartbeat every 0.5 s), through the real client, whose transport
is wrapped to count the requests it sends (the one thing added: the count). No Envoy: the
runner follows the sidecar's destination's checks as a dataplane does, its Envoy state aside.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from loom.api import AsyncClient
from loom.api.codec import Request
from loom.dataplane.checks import run_checks
from tests.support.server import ServerProcess, start_server

HEARTBEATS = 4
"""Heartbeats the quiet window lasts (0.5 s apart)."""


class Counting:
    """The client's own transport, counting each request's method and path."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: Counter[tuple[str, str]] = Counter()
        self.beat = asyncio.Event()

    async def send(self, request: Request, timeout: float) -> Any:
        path = request.target.partition("?")[0]
        self.sent[request.method, path] += 1
        try:
            return await self.inner.send(request, timeout)
        finally:
            if path.endswith("/heartbeat"):
                self.beat.set()

    def reads(self) -> int:
        return sum(n for (method, _), n in self.sent.items() if method == "GET")


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    s = start_server("--dataplane-deadline", "1.5")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def register(server: ServerProcess, port: int) -> None:
    server.put("/v1/agent/service/register", {
        "Name": "web", "Port": port, "Connect": {"SidecarService": {}},
        "Check": {"CheckID": "web-tcp", "TCP": f"127.0.0.1:{port}", "Interval": "10s"}})  # fmt: skip


async def until(predicate: Any, what: str, timeout: float = 15.0) -> Any:
    """``predicate()`` once true, re-tried every 50 ms; fails naming ``what`` after timeout."""
    async with asyncio.timeout(timeout):
        while not (found := await asyncio.to_thread(predicate)):
            await asyncio.sleep(0.05)
    assert found, what
    return found


async def heartbeat(counting: Counting) -> None:
    """Until the runner's next heartbeat has been answered."""
    counting.beat.clear()
    await asyncio.wait_for(counting.beat.wait(), 5)


async def settled(counting: Counting) -> int:
    """The runner's read count once a whole heartbeat went by without a read. Its own last
    reports move the index its blocking query waits on, so one more read may still come after
    the test has seen them (on a loaded machine it did, and the quiet window counted it)."""
    for _ in range(20):
        reads = counting.reads()
        await heartbeat(counting)
        if counting.reads() == reads:
            return reads
    raise AssertionError(f"the runner never went a heartbeat without reading: {counting.sent}")


def check(server: ServerProcess, cid: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = server.get("/v1/agent/checks").get(cid)
    return found


async def follow(server: ServerProcess, body: Any) -> None:
    counting = Counting(None)
    client = AsyncClient(server.http, timeout=10, token="")
    counting.inner, client.transport = client.transport, counting
    stop = asyncio.Event()
    task = asyncio.create_task(run_checks(client, "web-sidecar-proxy", "web", None, stop,
                                          poll_s=0.05))  # fmt: skip
    try:
        await body(counting)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_a_settled_dataplane_reads_nothing_until_the_catalog_moves(
    server: ServerProcess, listening: int
) -> None:
    register(server, listening)

    async def body(counting: Counting) -> None:
        await until(lambda: (c := check(server, "web-tcp")) and "Success" in c["Output"],
                    "the runner's first report of web-tcp")  # fmt: skip
        await until(lambda: (c := check(server, "service:web-sidecar-proxy:2"))
                    and c["Status"] == "passing", "the alias check passing")  # fmt: skip
        # and the sidecar's own listener check (no Envoy here: refused), reported once too
        await until(lambda: (c := check(server, "service:web-sidecar-proxy:1"))
                    and "refused" in c["Output"], "the runner's report of the listener check")  # fmt: skip
        before = await settled(counting)
        index = server.request("GET", "/v1/agent/checks")[2]["X-Consul-Index"]
        for _ in range(HEARTBEATS):  # 2 s with nothing to tell: no read at all
            await heartbeat(counting)
        assert server.request("GET", "/v1/agent/checks")[2]["X-Consul-Index"] == index
        assert counting.reads() == before, counting.sent

        # a change on the server is followed at once: a new check of web runs here
        server.put("/v1/agent/check/register", {
            "ID": "web-closed", "Name": "closed", "ServiceID": "web",
            "TCP": "127.0.0.1:1", "Interval": "10s"})  # fmt: skip
        closed = await until(lambda: (c := check(server, "web-closed"))
                             and "connection refused" in c["Output"] and c,
                             "the runner to run and report the new check", timeout=5)  # fmt: skip
        assert closed["Status"] == "critical"
        assert counting.sent["GET", "/v1/agent/checks"] > 0

    asyncio.run(follow(server, body))


def test_the_alias_check_follows_its_service_without_reading_it(
    server: ServerProcess, listening: int
) -> None:
    register(server, listening)
    alias = "service:web-sidecar-proxy:2"

    async def body(counting: Counting) -> None:
        await until(lambda: (c := check(server, alias)) and c["Status"] == "passing",
                    "the alias check passing")  # fmt: skip
        server.put("/v1/agent/check/register", {
            "ID": "web-ttl", "Name": "ttl", "ServiceID": "web", "TTL": "60s",
            "Status": "critical"})  # fmt: skip
        await until(lambda: (c := check(server, alias)) and c["Status"] == "critical",
                    "the alias check to follow web's critical check", timeout=5)  # fmt: skip
        assert counting.sent["GET", "/v1/agent/service/web"] == 0, counting.sent

    asyncio.run(follow(server, body))
