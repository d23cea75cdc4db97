"""Open-loop HTTP load at a fixed rate over keep-alive connections (shared by the benchmarks).

Request i is due at start + i/rate; its latency counts from that due time, so a slow server
cannot hide its queueing (no coordinated omission). Run standalone to measure from inside a
network namespace: prints one JSON line {"p50_ms", "p99_ms", "rate", "errors", "count"}.

    python bench/fixed_rate.py --host 10.0.0.2 --port 8080 --rate 1000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


async def fixed_rate(
    host: str, port: int, rate: int, seconds: float, conns: int = 16
) -> tuple[list[float], float, int]:
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        r, w = await asyncio.open_connection(host, port)
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pool.put_nowait((r, w))
    lat: list[float] = []
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        r, w = await pool.get()
        try:
            w.write(REQUEST)
            head = await r.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await r.readexactly(length)
            lat.append((time.perf_counter() - due) * 1000)
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            errors += 1
        finally:
            pool.put_nowait((r, w))

    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        _, w = pool.get_nowait()
        w.close()
    return lat, len(lat) / elapsed, errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    import uvloop

    lat, achieved, errors = uvloop.run(fixed_rate(args.host, args.port, args.rate, args.seconds))
    print(json.dumps({"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "rate": achieved,
                      "errors": errors, "count": len(lat), "latencies": lat}))  # fmt: skip


if __name__ == "__main__":
    main()
