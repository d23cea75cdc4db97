"""A client cannot fill the server's log: requests aiohttp refuses (an oversized URL) and
NACKs are one line each, the first few per kind are written and the rest become one summary
line, and no client error leaves a traceback (issue 11: 3.6 MB of tracebacks for 4,145
oversized URLs, 21.5 MB for 30,000 NACKs)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from google.rpc import status_pb2

from loom import ratelog
from loom.xds import server as xds_server
from loom.xds import session as xds_session
from loom.xds.translate.names import ORDER, TYPE_LISTENER
from tests.api.test_ads_protocol import SotwClient, _setup, _stop
from tests.support.server import start_server

FLOOD = 5000


async def _oversized(host: str, port: int, sem: asyncio.Semaphore) -> bytes:
    async with sem:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            # An oversized header: the request line may be long (a ?filter= expression can
            # be 64 KiB), a header may not be over aiohttp's 8190 bytes; both are refused
            # by aiohttp itself, before any handler, through the same logger.
            big = b"X-Big: " + b"a" * 9000
            writer.write(b"GET /v1/agent/services HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n\r\n")
            await writer.drain()
            return await reader.read()  # aiohttp answers 400 and closes
        finally:
            writer.close()
            await writer.wait_closed()


async def _flood(addr: str) -> list[bytes]:
    host, port = addr.rsplit(":", 1)
    sem = asyncio.Semaphore(32)
    return await asyncio.gather(*(_oversized(host, int(port), sem) for _ in range(FLOOD)))


def test_five_thousand_oversized_requests_are_a_handful_of_one_line_log_entries() -> None:
    server = start_server()
    try:
        before = len(server.log_text())
        answers = asyncio.run(_flood(server.http))
        assert all(a.startswith(b"HTTP/1.") and b" 400 " in a.split(b"\r\n")[0] for a in answers)
        # The server still serves (the log line is written before the 400 goes out).
        assert server.get("/v1/agent/services") == {}
        log = server.log_text()[before:]
    finally:
        server.stop()
    lines = log.splitlines()
    assert "Traceback" not in log
    refused = [line for line in lines if "refused a malformed request from 127.0.0.1: 400" in line]
    assert refused and "Got more than 8190 bytes" in refused[0]
    # At most the burst of one interval (the flood takes seconds), plus a summary if one closed.
    assert len(refused) <= ratelog.RateSettings().burst
    assert len(lines) <= ratelog.RateSettings().burst + 3, lines
    assert len(log.encode()) < 5000, len(log)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.tracebacks += record.exc_info is not None


@pytest.fixture
def xds_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Lines, list[float]]]:
    """The xDS log's lines, with a fresh limiter on a clock the test moves."""
    now = [0.0]
    limited = ratelog.RateLimitedLog(
        logging.getLogger("loom.xds"), ratelog.LogRate(clock=lambda: now[0])
    )
    monkeypatch.setattr(xds_server, "limited", limited)
    monkeypatch.setattr(xds_session, "limited", limited)  # NACKs are logged by the session
    handler = _Lines()
    logger = logging.getLogger("loom.xds")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler, now
    logger.removeHandler(handler)
    logger.setLevel(level)


def _nack(version: str, nonce: str) -> object:
    from envoy.service.discovery.v3 import discovery_pb2

    return discovery_pb2.DiscoveryRequest(
        type_url=TYPE_LISTENER, version_info=version, response_nonce=nonce,
        error_detail=status_pb2.Status(code=3, message="port 21000 already in use"),
    )  # fmt: skip


async def test_five_thousand_nacks_are_one_line_per_version_then_a_summary(
    xds_log: tuple[_Lines, list[float]],
) -> None:
    handler, now = xds_log
    state, target, stop = await _setup()
    client = SotwClient(target)
    task = asyncio.create_task(client.run())
    try:
        initial = await client.received(len(ORDER))
        nonce = initial[-1].nonce
        for _ in range(FLOOD // 2):  # the same version rejected over and over: one line
            client.out.put_nowait(_nack("bad-1", nonce))
        for n in range(FLOOD // 2):  # a new version each time: the burst, then counted
            client.out.put_nowait(_nack(f"bad-{n + 2}", nonce))
        await client.barrier()  # every NACK before it has been handled
        nacks = [line for line in handler.lines if "rejected" in line]
        assert nacks[0] == (
            f"proxy web-sidecar-proxy rejected {TYPE_LISTENER} version bad-1: "
            "port 21000 already in use"
        )
        burst = xds_server.limited.rate.settings.burst
        assert len(nacks) == burst
        assert not task.done()  # NACKs are no reason to drop the stream
        now[0] += xds_server.limited.rate.settings.interval_s
        xds_server.limited.flush()
        suppressed = FLOOD // 2 + 1 - burst
        assert handler.lines[-1].startswith(f"suppressed {suppressed} similar messages (xds nack")
        assert handler.tracebacks == 0
        assert sum(len(line) for line in handler.lines) < 4000
    finally:
        await _stop(task, client)
        await stop()  # type: ignore[operator]
        await state.close()
