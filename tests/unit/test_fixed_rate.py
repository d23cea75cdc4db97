"""The benches' fixed-rate client (``bench/fixed_rate.py``) against real loopback HTTP servers:
paired targets each get the full rate, every connection's warm-up request stays out of the
figures, and a target that answers garbage stops the run before anything is timed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from bench.fixed_rate import paired_fixed_rate

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n"
BROKEN = b"HTTP/1.1 200 OK\r\n\r\n"  # no Content-Length: the client cannot read a body


@asynccontextmanager
async def http_server(reply: bytes) -> AsyncIterator[tuple[int, list[int]]]:
    """A keep-alive server answering ``reply`` to every request; yields (port, [requests])."""
    seen = [0]

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                await r.readuntil(b"\r\n\r\n")
                seen[0] += 1
                w.write(reply)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], seen


async def test_paired_targets_each_get_every_request_and_warmups_are_not_counted() -> None:
    async with http_server(OK) as (a, seen_a), http_server(OK) as (b, seen_b):
        sides = await paired_fixed_rate([("127.0.0.1", a), ("127.0.0.1", b)], 200, 0.25, conns=4)
    assert [len(s.latencies) for s in sides] == [50, 50]
    assert [s.errors for s in sides] == [0, 0]
    assert (seen_a[0], seen_b[0]) == (54, 54)  # 50 timed + one warm-up per connection
    assert all(lat > 0 for s in sides for lat in s.latencies)


async def test_a_target_answering_without_a_length_stops_the_run_before_timing() -> None:
    async with http_server(OK) as (ok, _), http_server(BROKEN) as (bad, seen):
        with pytest.raises(ConnectionError, match="warm-up"):
            await paired_fixed_rate([("127.0.0.1", ok), ("127.0.0.1", bad)], 100, 0.1, conns=2)
    assert seen[0] == 1  # only the first warm-up request was sent


def test_under_uvloop_a_request_sent_before_its_due_time_is_timed_from_when_it_was_sent() -> None:
    # uvloop's timers tick in whole milliseconds, so at 1,000 req/s a sleep of under a
    # millisecond returns at once and requests leave early: timed from their due time, the
    # fast answers of a loopback server came out negative (a round's median once did).
    uvloop = pytest.importorskip("uvloop")

    async def run() -> list[float]:
        async with http_server(OK) as (a, _), http_server(OK) as (b, _):
            sides = await paired_fixed_rate([("127.0.0.1", a), ("127.0.0.1", b)], 1000, 0.2)
        return [lat for s in sides for lat in s.latencies]

    latencies = uvloop.run(run())
    assert len(latencies) == 400
    assert min(latencies) > 0


async def test_the_collector_is_paused_only_while_the_clock_runs() -> None:
    import gc

    async with http_server(OK) as (port, _):
        assert gc.isenabled()
        await paired_fixed_rate([("127.0.0.1", port)], 200, 0.1, conns=2)
        assert gc.isenabled()
