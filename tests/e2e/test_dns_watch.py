"""Tables from the server: the blocking-query loop against a real HTTP server on loopback.

The server here is a stand-in for the lead's ``/v1/loom/dns-table`` endpoint (which lives in
``loom server``, not in this package): a real aiohttp server speaking the same contract
(``?index=N&wait=30s`` held until the index moves, ``X-Consul-Index`` on every answer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from loom.dns import DnsProxy, DnsSettings, watch_table, watch_table_file


def mesh(vip: str) -> dict[str, Any]:
    return {"Datacenter": "dc1", "Services": [
        {"Name": "web", "Namespace": "default", "VirtualIPs": [vip]}]}


class TableServer:
    """Serves GET /v1/loom/dns-table as a Consul-style blocking query."""

    def __init__(self) -> None:
        self.index = 7
        self.table = mesh("240.0.0.1")
        self.status = 200
        self.body: bytes | None = None
        self.requests: list[dict[str, str]] = []
        self.arrivals: list[float] = []
        """Loop time at which each request arrived."""
        self._changed = asyncio.Event()

    def publish(self, table: dict[str, Any]) -> None:
        self.index += 1
        self.table = table
        self._changed.set()
        self._changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        self.arrivals.append(asyncio.get_running_loop().time())
        if self.status != 200 or self.body is not None:
            return web.Response(status=self.status, body=self.body or b"boom\nsecond line")
        if int(request.query.get("index", "0")) >= self.index:
            wait_s = float(request.query.get("wait", "0s").rstrip("s"))
            try:
                async with asyncio.timeout(wait_s):
                    await self._changed.wait()
            except TimeoutError:
                pass
        return web.json_response({**self.table, "Index": self.index},
                                 headers={"X-Consul-Index": str(self.index)})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/loom/dns-table", self.handle)
        return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[TableServer, str]]:
    tables = TableServer()
    runner = web.AppRunner(tables.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield tables, f"127.0.0.1:{port}"
    await runner.cleanup()


SLACK_S = 0.05
"""Timers may fire a clock tick early: lower bounds on waits allow this much."""


def vip_of_web(proxy: DnsProxy) -> list[str]:
    records = proxy.table.lookup("web.default.svc.cluster.local")
    return records.addresses() if records else []


async def eventually(check: Any, seconds: float = 3.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_watch_loads_the_table_then_follows_each_new_index(
    server: tuple[TableServer, str],
) -> None:
    tables, addr = server
    proxy, stop = DnsProxy(DnsSettings()), asyncio.Event()
    task = asyncio.create_task(watch_table(addr, proxy, stop))
    await eventually(lambda: vip_of_web(proxy) == ["240.0.0.1"])
    await eventually(lambda: tables.requests[-1:] == [{"index": "7", "wait": "30s"}])
    tables.publish(mesh("240.0.0.2"))
    await eventually(lambda: vip_of_web(proxy) == ["240.0.0.2"])
    assert proxy.table.index == 8
    stop.set()
    async with asyncio.timeout(2):  # returns promptly although a blocking query is open
        await task
    assert tables.requests[0] == {}  # the first request does not block


async def test_the_watch_speaks_http_over_a_unix_socket(tmp_path: Path) -> None:
    tables = TableServer()
    runner = web.AppRunner(tables.app())
    await runner.setup()
    sock = tmp_path / "loom.sock"
    await web.UnixSite(runner, str(sock)).start()
    try:
        proxy, stop = DnsProxy(DnsSettings()), asyncio.Event()
        task = asyncio.create_task(watch_table(f"unix:{sock}", proxy, stop))
        await eventually(lambda: vip_of_web(proxy) == ["240.0.0.1"])
        stop.set()
        await task
    finally:
        await runner.cleanup()


async def test_failures_back_off_with_one_log_line_each_and_keep_the_table(
    server: tuple[TableServer, str], caplog: pytest.LogCaptureFixture,
) -> None:
    tables, addr = server
    tables.status = 500
    proxy, stop = DnsProxy(DnsSettings()), asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="loom.dns.watch"):
        task = asyncio.create_task(watch_table(addr, proxy, stop))
        # The first failure at once, the retry after 1 s, the next after 2 s more.
        await eventually(lambda: len(tables.requests) == 3, 10)
        stop.set()
        await task
    first, second, third = tables.arrivals
    assert second - first >= 1.0 - SLACK_S and third - second >= 2.0 - SLACK_S
    assert [r.getMessage() for r in caplog.records] == [
        f"dns table from {addr}: HTTP 500: boom (retry in 1 s)",
        f"dns table from {addr}: HTTP 500: boom (retry in 2 s)",
        f"dns table from {addr}: HTTP 500: boom (retry in 4 s)",
    ]
    assert proxy.table.index == 0  # still the empty table it started with


async def test_an_invalid_table_from_the_server_is_refused_by_field(
    server: tuple[TableServer, str], caplog: pytest.LogCaptureFixture,
) -> None:
    tables, addr = server
    tables.body = b'{"Services": [{"Name": "web", "VirtualIPs": ["nope"]}]}'
    proxy, stop = DnsProxy(DnsSettings()), asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="loom.dns.watch"):
        task = asyncio.create_task(watch_table(addr, proxy, stop))
        await eventually(lambda: bool(caplog.records))
        stop.set()
        await task
    assert "Services[0].VirtualIPs[0]: expected an IPv4 or IPv6 address" in (
        caplog.records[0].getMessage())


async def test_an_unreachable_server_is_retried_not_spun_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, stop = DnsProxy(DnsSettings()), asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="loom.dns.watch"):
        task = asyncio.create_task(watch_table("http://127.0.0.1:9", proxy, stop))
        await eventually(lambda: len(caplog.records) >= 2, 10)
        stop.set()
        await task
    first, second = caplog.records[:2]
    assert first.getMessage().startswith("dns table from http://127.0.0.1:9: ")
    assert first.getMessage().endswith("(retry in 1 s)")
    assert second.created - first.created >= 1.0 - SLACK_S  # waited, did not spin
    assert len(caplog.records) == 2  # stopped during the 2 s wait that followed


async def test_the_table_file_watch_reloads_on_change_and_keeps_a_good_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "table.json"
    path.write_text('{"Services": []}')
    proxy, stop = DnsProxy(DnsSettings()), asyncio.Event()
    task = asyncio.create_task(watch_table_file(str(path), proxy, stop, interval_s=0.02))
    path.write_text('{"Services": [{"Name": "web", "Namespace": "default", '
                    '"VirtualIPs": ["240.0.0.5"]}]}')
    await eventually(lambda: vip_of_web(proxy) == ["240.0.0.5"])
    with caplog.at_level(logging.WARNING, logger="loom.dns.watch"):
        path.write_text("{not json")
        await eventually(lambda: bool(caplog.records))
    assert vip_of_web(proxy) == ["240.0.0.5"]
    assert caplog.records[0].getMessage().startswith(f"table file {path} is not JSON")
    stop.set()
    await task
