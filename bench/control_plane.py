"""Control-plane benchmarks, one run, side by side.

1. Leaf certificates signed per second (in-process CA), against Consul's default CSR rate
   limit of 50/s.
2. Blocking-query wake-up latency: a watcher blocked on /v1/catalog/services?index=N, a write
   lands, how long until the watcher has its answer (real server process, loopback).
3. Registrations per second through the HTTP API, memory store vs SQLite store.

Run: .venv/bin/python bench/control_plane.py
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import row
from loom.ca.authority import Signer, new_root
from tests.support.server import start_server


def bench_leaves(seconds: float = 2.0) -> float:
    now = dt.datetime.now(dt.UTC)
    signer = Signer(new_root("bench.consul", now))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        signer.leaf("default", "dc1", f"svc-{n % 100}", now)
        n += 1
    return n / (time.perf_counter() - start)


def _conn(addr: str) -> http.client.HTTPConnection:
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def bench_wakeup(addr: str, rounds: int = 50) -> list[float]:
    lat = []
    for i in range(rounds):
        c = _conn(addr)
        c.request("GET", "/v1/catalog/services")
        r = c.getresponse()
        r.read()
        index = r.getheader("X-Consul-Index")
        woke: list[float] = []

        def watch(index: str = str(index), woke: list[float] = woke) -> None:
            w = _conn(addr)
            w.request("GET", f"/v1/catalog/services?index={index}&wait=30s")
            w.getresponse().read()
            woke.append(time.perf_counter())

        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.05)  # the watcher is parked
        sent = time.perf_counter()
        c.request("PUT", "/v1/agent/service/register", json.dumps({"Name": f"w{i}", "Port": 1}))
        c.getresponse().read()
        t.join()
        lat.append((woke[0] - sent) * 1000)
    return lat


def bench_registrations(addr: str, count: int = 300) -> float:
    c = _conn(addr)
    start = time.perf_counter()
    for i in range(count):
        body = {"Name": f"reg-{i}", "Port": 8000, "Connect": {"SidecarService": {"Port": 20000}}}
        c.request("PUT", "/v1/agent/service/register", json.dumps(body))
        c.getresponse().read()
    return count / (time.perf_counter() - start)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    rate = bench_leaves()
    print(
        f"leaf certificates: {rate:,.0f}/s signed (EC P-256 + SPIFFE SAN); "
        f"Consul's default CSR rate limit is 50/s -> {rate / 50:,.0f}x"
    )
    row("leaf certificates signed in process", ">= 50/s", f"{rate:,.0f}/s", rate >= 50)
    mem = start_server()
    try:
        lat = bench_wakeup(mem.http)
        print(
            f"blocking-query wake-up after a write: p50 {statistics.median(lat):.2f} ms, "
            f"p99 {pct(lat, 99):.2f} ms over {len(lat)} writes (memory store)"
        )
        row("blocking-query wake-up after a write, p99 (memory)", "-",
            f"{pct(lat, 99):.2f} ms (p50 {statistics.median(lat):.2f})", None)  # fmt: skip
        mem_rate = bench_registrations(mem.http)
    finally:
        mem.stop()
    with tempfile.TemporaryDirectory() as d:
        disk = start_server(data_dir=Path(d))
        try:
            lat_disk = bench_wakeup(disk.http)
            disk_rate = bench_registrations(disk.http)
        finally:
            disk.stop()
    print(
        f"blocking-query wake-up after a write: p50 {statistics.median(lat_disk):.2f} ms, "
        f"p99 {pct(lat_disk, 99):.2f} ms (sqlite store, fsync per write)"
    )
    print(
        f"registrations (service + sidecar, sequential, one client): memory {mem_rate:,.0f}/s, "
        f"sqlite {disk_rate:,.0f}/s, ratio sqlite/memory {disk_rate / mem_rate:.2f}"
    )
    row("registrations/s, memory / sqlite", "-", f"{mem_rate:,.0f} / {disk_rate:,.0f}", None)


if __name__ == "__main__":
    main()
