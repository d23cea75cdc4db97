"""The KV store beside a service registration, on one real `loom server --dev`.

Two sides, measured over one keep-alive connection each, in alternating rounds (KV first in
even rounds, registrations first in odd ones) so a busy machine slows both alike:

- KV: ``PUT /v1/kv/bench/k-N`` per second, ``GET /v1/kv/bench/k-N`` per second, and the
  wake-up latency of a blocking ``GET /v1/kv/bench/watched?index=`` after a write to it;
- registration: ``PUT /v1/agent/service/register`` (service + sidecar) per second,
  ``GET /v1/health/service/reg`` per second, and the wake-up of a blocking health query.

Then the isolation check: a health query parked while 200 KV writes land must not return
(KV lives in its own tables, so catalog and xDS watchers sleep through KV traffic).
Medians over the rounds, with the spread (min-max); the goal is printed beside each figure.

Run: .venv/bin/python bench/kv.py
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from tests.support.server import start_server

ROUNDS = 5
COUNT = 300
WAKES = 10


def _conn(addr: str) -> http.client.HTTPConnection:
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def _call(
    c: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[bytes, str]:
    c.request(method, path, body)
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (path, r.status, data)
    return data, r.getheader("X-Consul-Index") or "0"


def rate(fn: Callable[[http.client.HTTPConnection, int], object], addr: str) -> float:
    c = _conn(addr)
    start = time.perf_counter()
    for i in range(COUNT):
        fn(c, i)
    return COUNT / (time.perf_counter() - start)


def kv_put(c: http.client.HTTPConnection, i: int) -> None:
    _call(c, "PUT", f"/v1/kv/bench/k-{i % 100}", f"value-{i}".encode())


def kv_get(c: http.client.HTTPConnection, i: int) -> None:
    _call(c, "GET", f"/v1/kv/bench/k-{i % 100}")


def register(c: http.client.HTTPConnection, i: int) -> None:
    body = {"Name": "reg", "ID": f"reg-{i % 50}", "Port": 8000 + i % 50,
            "Connect": {"SidecarService": {}}}  # fmt: skip
    _call(c, "PUT", "/v1/agent/service/register", json.dumps(body).encode())


def health(c: http.client.HTTPConnection, i: int) -> None:
    _call(c, "GET", "/v1/health/service/reg")


def wakeups(
    addr: str, read: str, write: Callable[[http.client.HTTPConnection, int], None]
) -> list[float]:
    """Milliseconds from a write to the return of a blocking ``read`` parked before it."""
    c = _conn(addr)
    out = []
    for i in range(WAKES):
        _, index = _call(c, "GET", read)
        woke: list[float] = []

        def watch(index: str = index, woke: list[float] = woke) -> None:
            sep = "&" if "?" in read else "?"
            _call(_conn(addr), "GET", f"{read}{sep}index={index}&wait=30s")
            woke.append(time.perf_counter())

        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.05)  # the watcher is parked
        sent = time.perf_counter()
        write(c, 1000 + i)
        t.join()
        out.append((woke[0] - sent) * 1000)
    return out


def kv_watched(c: http.client.HTTPConnection, i: int) -> None:
    _call(c, "PUT", "/v1/kv/bench/watched", f"v{i}".encode())


def reg_watched(c: http.client.HTTPConnection, i: int) -> None:
    body = {"Name": "reg", "ID": f"reg-w{i}", "Port": 9000 + i % 1000}
    _call(c, "PUT", "/v1/agent/service/register", json.dumps(body).encode())


def isolation(addr: str) -> int:
    """How many of 200 KV writes ended a parked health blocking query (goal: 0)."""
    c = _conn(addr)
    _, index = _call(c, "GET", "/v1/health/service/reg")
    returned: list[float] = []

    def watch() -> None:
        _call(_conn(addr), "GET", f"/v1/health/service/reg?index={index}&wait=3s")
        returned.append(time.perf_counter())

    t = threading.Thread(target=watch)
    started = time.perf_counter()
    t.start()
    time.sleep(0.05)
    for i in range(200):
        kv_put(c, i)
    t.join()
    return 0 if returned[0] - started >= 2.9 else 1


def fmt(values: list[float], unit: str) -> str:
    return (
        f"{statistics.median(values):8,.1f} {unit} (spread {min(values):,.1f}-{max(values):,.1f})"
    )


def main() -> None:
    server = start_server()
    try:
        c = _conn(server.http)
        for i in range(100):  # the keys and instances the reads hit exist
            kv_put(c, i)
        register(c, 0)
        kv_watched(c, 0)
        figures: dict[str, list[float]] = {k: [] for k in (
            "kv put", "kv get", "kv wake", "reg put", "reg get", "reg wake")}  # fmt: skip
        for n in range(ROUNDS):
            sides = ["kv", "reg"] if n % 2 == 0 else ["reg", "kv"]
            for side in sides:
                if side == "kv":
                    figures["kv put"].append(rate(kv_put, server.http))
                    figures["kv get"].append(rate(kv_get, server.http))
                    figures["kv wake"].extend(
                        wakeups(server.http, "/v1/kv/bench/watched", kv_watched)
                    )
                else:
                    figures["reg put"].append(rate(register, server.http))
                    figures["reg get"].append(rate(health, server.http))
                    figures["reg wake"].extend(
                        wakeups(server.http, "/v1/health/service/reg", reg_watched)
                    )
        ratio = statistics.median(figures["kv put"]) / statistics.median(figures["reg put"])
        print(f"{ROUNDS} rounds of {COUNT} requests, sides alternating; medians (spread)")
        print(f"KV put            {fmt(figures['kv put'], '/s')}   goal >= registrations/s")
        print(
            f"registration      {fmt(figures['reg put'], '/s')}   (KV put / registration: {ratio:.2f}x)"
        )
        print(f"KV get            {fmt(figures['kv get'], '/s')}   goal >= 1,000/s")
        print(f"health read       {fmt(figures['reg get'], '/s')}")
        print(f"KV wake-up        {fmt(figures['kv wake'], 'ms')}   goal p50 <= 5 ms")
        print(f"health wake-up    {fmt(figures['reg wake'], 'ms')}")
        woken = isolation(server.http)
        print(f"health watchers ended by 200 KV writes: {woken}   goal 0")
        kv_get_rate = statistics.median(figures["kv get"])
        kv_wake = statistics.median(figures["kv wake"])
        report.row("KV put/s vs registrations/s", ">= 1.0x", f"{ratio:.2f}x", ratio >= 1.0)
        report.row("KV get/s", ">= 1,000/s", f"{kv_get_rate:.0f}/s", kv_get_rate >= 1000)
        report.row("KV blocking-query wake-up, p50", "<= 5 ms", f"{kv_wake:.1f} ms", kv_wake <= 5)
        report.row("health watchers woken by KV writes", "0", str(woken), woken == 0)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
