"""Open-loop HTTP load at a fixed rate over keep-alive connections (shared by the benchmarks).

Request i is due at start + i/rate; its latency counts from when it leaves, its wait for a
free connection included, so a slow server cannot hide its queueing (no coordinated omission
while a side has connections to spare: 16 carry 1,000 req/s through a 16 ms stall).

Several targets are measured *paired*: one client, one event loop, each target at the full
rate, their requests interleaved (target k's i-th request is due k/(rate*n) after target
0's). A stall of the machine, or of this Python client, then lands on every target alike,
instead of on whichever side happened to be running (with sides measured one after the other,
one 100 ms stall made a side's p99 and runs printed "added p99 -178 ms"). Every connection
carries one untimed request before the clock starts, so no target's first requests pay for
connection set-up (a sidecar's upstream TLS handshake) that steady keep-alive traffic never
sees.

Run standalone to measure from inside a network namespace: prints one JSON line, a list of
{"target", "p50_ms", "p99_ms", "rate", "errors", "count", "latencies"}, one per ``--target``.

    python bench/fixed_rate.py --target 10.0.0.2:8080 --target 10.96.0.1:8080 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


@dataclass
class Side:
    """What one target's stream measured."""

    latencies: list[float] = field(default_factory=list)
    """Milliseconds from each request's due time to its whole response."""
    rate: float = 0.0
    """Responses per second achieved."""
    errors: int = 0
    """Requests that failed (connection closed, malformed answer)."""


async def _exchange(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(REQUEST)
    head = await r.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await r.readexactly(length)


async def _pool(
    host: str, port: int, conns: int, opened: list[asyncio.StreamWriter]
) -> asyncio.Queue[Conn]:
    """``conns`` warm connections (each ``opened`` too, for closing them whatever happens)."""
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(conns):
        r, w = await asyncio.open_connection(host, port)
        opened.append(w)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await _exchange(r, w)  # warm: the untimed first request
        except (asyncio.IncompleteReadError, IndexError, ValueError) as exc:
            raise ConnectionError(f"{host}:{port}: no valid answer to the warm-up request") from exc
        pool.put_nowait((r, w))
    return pool


async def paired_fixed_rate(
    targets: Sequence[tuple[str, int]], rate: int, seconds: float, conns: int = 16
) -> list[Side]:
    """Each target at ``rate`` req/s for ``seconds``, interleaved; one ``Side`` per target."""
    opened: list[asyncio.StreamWriter] = []
    try:
        pools = [await _pool(host, port, conns, opened) for host, port in targets]
        gc.collect()
        gc.disable()
        try:
            return await _measure(pools, rate, seconds)
        finally:
            gc.enable()
    finally:
        for w in opened:
            w.close()
        await asyncio.gather(*(w.wait_closed() for w in opened), return_exceptions=True)


async def _measure(pools: list[asyncio.Queue[Conn]], rate: int, seconds: float) -> list[Side]:
    sides = [Side() for _ in pools]

    async def one(k: int) -> None:
        # Timed from when the client sends it (any wait for a free connection included: the
        # server's queueing counts), not from its due time. uvloop's timers tick in whole
        # milliseconds, so a request leaves up to a millisecond before or after it is due:
        # timed from the due time, early ones came out short, even negative (a round's median
        # once did), and late ones carried the client's own timer lateness, which in a paired
        # round lands on whichever side was due first.
        origin = time.perf_counter()
        r, w = await pools[k].get()
        try:
            await _exchange(r, w)
            sides[k].latencies.append((time.perf_counter() - origin) * 1000)
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            sides[k].errors += 1
        finally:
            pools[k].put_nowait((r, w))

    n = len(pools)
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        for k in range(n):
            due = start + i / rate + k / (rate * n)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for side in sides:
        side.rate = len(side.latencies) / elapsed
    return sides


async def fixed_rate(
    host: str, port: int, rate: int, seconds: float, conns: int = 16
) -> tuple[list[float], float, int]:
    """One target alone: (latencies in ms, achieved rate, errors)."""
    (side,) = await paired_fixed_rate([(host, port)], rate, seconds, conns)
    return side.latencies, side.rate, side.errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True, metavar="HOST:PORT",
                    help="a target; repeat to measure several, paired")  # fmt: skip
    ap.add_argument("--rate", type=int, default=1000, help="req/s to each target")
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    import uvloop

    targets = [(t.rpartition(":")[0], int(t.rpartition(":")[2])) for t in args.target]
    sides = uvloop.run(paired_fixed_rate(targets, args.rate, args.seconds))
    print(json.dumps([{"target": t, "p50_ms": pct(s.latencies, 50), "p99_ms": pct(s.latencies, 99),
                       "rate": s.rate, "errors": s.errors, "count": len(s.latencies),
                       "latencies": s.latencies} for t, s in zip(args.target, sides, strict=True)]))  # fmt: skip


if __name__ == "__main__":
    main()
