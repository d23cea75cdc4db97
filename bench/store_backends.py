"""Store backends side by side: registrations per second through the HTTP API (one client,
sequential) on memory, SQLite and etcd; then two servers sharing etcd: how long a write through
A takes to be visible on B, and two concurrent writers (one per server) with their conflicts.

Needs Debian's etcd (/usr/bin/etcd). Run: .venv/bin/python bench/store_backends.py [--count 400]
"""

from __future__ import annotations

import argparse
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
from tests.support.etcd import EtcdProcess
from tests.support.server import ServerProcess, start_server

COUNT = 400
"""Registrations per backend and per writer (``--count``)."""


def _conn(addr: str) -> http.client.HTTPConnection:
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def _register(c: http.client.HTTPConnection, name: str, sidecar_port: int) -> int:
    """Register ``name`` with a sidecar on ``sidecar_port``: each sidecar of the server's node
    needs its own port (a taken one is a 400), so callers number them."""
    body = {"Name": name, "Port": 8000, "Connect": {"SidecarService": {"Port": sidecar_port}}}
    c.request("PUT", "/v1/agent/service/register", json.dumps(body))
    resp = c.getresponse()
    resp.read()
    return resp.status


def _get(addr: str, path: str) -> bytes:
    c = _conn(addr)
    c.request("GET", path)
    return c.getresponse().read()


def registrations(
    addr: str, tag: str, count: int | None = None, base_port: int = 20000
) -> tuple[float, int]:
    """(registrations per second, failed requests); ``count`` defaults to ``COUNT``; the
    sidecars get ports from ``base_port`` up (writers sharing a node need apart ranges)."""
    count = COUNT if count is None else count
    c = _conn(addr)
    failed = 0
    start = time.perf_counter()
    for i in range(count):
        failed += _register(c, f"{tag}-{i}", base_port + i) != 200
    return count / (time.perf_counter() - start), failed


def visibility_ms(a: ServerProcess, b: ServerProcess, rounds: int = 50) -> list[float]:
    """Write through A; poll B's catalog until it has the service."""
    ca, cb = _conn(a.http), _conn(b.http)
    lat = []
    for i in range(rounds):
        sent = time.perf_counter()
        if _register(ca, f"vis-{i}", 40000 + i) != 200:
            raise SystemExit(f"registering vis-{i} through A failed")
        while True:
            cb.request("GET", f"/v1/catalog/service/vis-{i}")
            r = cb.getresponse()
            if json.loads(r.read()):
                break
        lat.append((time.perf_counter() - sent) * 1000)
    return lat


def etcd_server(etcd: EtcdProcess, prefix: str) -> ServerProcess:
    return ServerProcess(
        ["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix,
         "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]
    ).start()  # fmt: skip


def main() -> None:
    global COUNT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=COUNT, help="registrations per side")
    COUNT = parser.parse_args().count
    if not 0 < COUNT <= 9000:
        parser.error("--count must be 1..9000 (each writer numbers its sidecar ports from 20000 or 30000)")
    rates: dict[str, float] = {}
    server = start_server()
    try:
        rates["memory"] = registrations(server.http, "m")[0]
    finally:
        server.stop()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(data_dir=Path(tmp))
        try:
            rates["sqlite"] = registrations(server.http, "s")[0]
        finally:
            server.stop()
        etcd = EtcdProcess(Path(tmp) / "etcd").start()
        try:
            a = etcd_server(etcd, "/one/")
            try:
                rates["etcd"] = registrations(a.http, "e")[0]
            finally:
                a.stop()
            a, b = etcd_server(etcd, "/two/"), etcd_server(etcd, "/two/")
            try:
                vis = visibility_ms(a, b)
                results: dict[str, tuple[float, int]] = {}
                threads = [
                    threading.Thread(
                        target=lambda s=s, n=n, p=p: results.__setitem__(
                            n, registrations(s.http, n, base_port=p)
                        )
                    )
                    for s, n, p in ((a, "ca", 20000), (b, "cb", 30000))
                ]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                both = time.perf_counter() - start
                time.sleep(0.2)  # let both views follow the last writes
                seen = [len(json.loads(_get(s.http, "/v1/catalog/services"))) for s in (a, b)]
            finally:
                a.stop()
                b.stop()
        finally:
            etcd.stop()

    print(f"Registrations through the HTTP API ({COUNT}, one client, sequential):")
    for name, rate in rates.items():
        ratio = rate / rates["memory"]
        print(f"  {name:7} {rate:8.0f}/s   {ratio:5.2f}x memory")
    print("Two servers sharing etcd:")
    print(f"  write through A visible on B: median {statistics.median(vis):.1f} ms, "
          f"p95 {sorted(vis)[int(len(vis) * 0.95)]:.1f} ms (incl. the write itself)")  # fmt: skip
    row("registrations/s, memory / sqlite / etcd", "-",
        " / ".join(f"{rates[k]:,.0f}" for k in ("memory", "sqlite", "etcd")), None)  # fmt: skip
    row("etcd: write through A visible on B, median", "-",
        f"{statistics.median(vis):.1f} ms", None)  # fmt: skip
    ok = sum(COUNT - f for _, f in results.values())
    conflicts = sum(f for _, f in results.values())
    print(f"  two concurrent writers (one per server, {COUNT} each): {ok / both:.0f} ok/s "
          f"total, {conflicts} of {2 * COUNT} failed (HTTP 409 after the server's retries, or 400)")  # fmt: skip
    print(f"  catalog services seen by A and B afterwards: {seen} (expected {2 * ok + 2 * 50 + 1}: "
          "the acknowledged registrations + sidecars, 50 visibility probes + sidecars, and the "
          "servers' own `consul` service)")  # fmt: skip


if __name__ == "__main__":
    main()
