"""Catalog scale: does registration cost stay flat as the catalog grows?

Against a real ``loom server`` process (memory store, then SQLite in a temp dir):

1. register N services, each with a sidecar, through the agent API (one client, sequential):
   the rate of the first 1,000 and of the last 1,000, and their ratio (goal >= 0.8x). The
   ratio is taken from the server's own CPU time per registration in each window
   (``/proc/PID/stat``), which a busy machine does not bend as it does wall-clock rates (a
   neighbour starting work during the last window halved the wall-clock figure); the
   wall-clock rates are printed beside it;
2. the server's resident memory once the N services are registered (goal < 300 MB at 10,000);
3. ``GET /v1/catalog/services`` with one service carrying 20,000 distinct tags, median of
   several requests (goal < 100 ms).

Prints figures, never asserts. Run: ``.venv/bin/python bench/catalog_scale.py [--services N]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import cpu_seconds
from bench.report import row
from tests.support.server import ServerProcess, start_server

WINDOW = 1000


def _conn(addr: str) -> http.client.HTTPConnection:
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=120)


def _put(c: http.client.HTTPConnection, path: str, body: object) -> None:
    c.request("PUT", path, json.dumps(body))
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"PUT {path}: {r.status} {data[:200]!r}")


def register(
    addr: str, count: int, pid: int, marks: set[int]
) -> tuple[list[float], dict[int, float]]:
    """Register ``count`` services with sidecars; returns each registration's end time and the
    server's CPU seconds before registration ``i`` for every ``i`` in ``marks`` (and ``count``)."""
    c = _conn(addr)
    ends: list[float] = []
    cpu: dict[int, float] = {}
    for i in range(count):
        if i in marks:
            cpu[i] = cpu_seconds(pid)
        # Explicit sidecar ports: the auto-assigned range (21000-21255) holds only 256.
        sidecar = {"Port": 30000 + i % 30000}
        body = {"Name": f"svc-{i}", "Port": 8000, "Connect": {"SidecarService": sidecar}}
        _put(c, "/v1/agent/service/register", body)
        ends.append(time.perf_counter())
    cpu[count] = cpu_seconds(pid)
    return ends, cpu


def window_rate(start: float, ends: list[float], lo: int, hi: int) -> float:
    begin = start if lo == 0 else ends[lo - 1]
    return (hi - lo) / (ends[hi - 1] - begin)


def rss_mb(server: ServerProcess) -> float:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tag_query_ms(addr: str, tags: int, rounds: int = 7) -> list[float]:
    c = _conn(addr)
    body = {"Name": "tagged", "Port": 9000, "Tags": [f"tag-{i}" for i in range(tags)]}
    _put(c, "/v1/agent/service/register", body)
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        c.request("GET", "/v1/catalog/services")
        r = c.getresponse()
        raw = r.read()
        out.append((time.perf_counter() - t0) * 1000)  # the client's JSON parse excluded
        data = json.loads(raw)
        if len(data["tagged"]) != tags:
            raise RuntimeError(f"expected {tags} tags, got {len(data['tagged'])}")
    return out


def run(label: str, server: ServerProcess, count: int, tags: int) -> None:
    try:
        window = min(WINDOW, count // 2)
        assert server.proc is not None
        start = time.perf_counter()
        ends, cpu = register(server.http, count, server.proc.pid, {0, window, count - window})
        first = window_rate(start, ends, 0, window)
        last = window_rate(start, ends, count - window, count)
        total = count / (ends[-1] - start)
        cpu_first = (cpu[window] - cpu[0]) / window * 1e6
        cpu_last = (cpu[count] - cpu[count - window]) / window * 1e6
        ratio = cpu_first / cpu_last
        print(
            f"{label}: {count:,} services + sidecars in {ends[-1] - start:.1f} s ({total:,.0f}/s); "
            f"first {window:,}: {first:,.0f}/s, last {window:,}: {last:,.0f}/s wall-clock "
            f"(ratio {last / first:.2f}); server CPU per registration {cpu_first:,.0f} -> "
            f"{cpu_last:,.0f} us, rate ratio by CPU last/first {ratio:.2f} (goal >= 0.8)"
        )
        rss = rss_mb(server)
        print(f"{label}: server RSS with {count:,} services: {rss:.0f} MB (goal < 300 at 10,000)")
        row(f"catalog ({label}): registration rate last/first, {count:,} services", ">= 0.8x",
            f"{ratio:.2f}x by server CPU ({cpu_first:,.0f} -> {cpu_last:,.0f} us each); "
            f"wall {last / first:.2f}x ({first:,.0f} -> {last:,.0f}/s)", ratio >= 0.8)  # fmt: skip
        row(f"catalog ({label}): server RSS, {count:,} services", "< 300 MB at 10,000",
            f"{rss:.0f} MB", rss < 300 if count >= 10_000 else None)  # fmt: skip
        lat = tag_query_ms(server.http, tags)
        mid = statistics.median(lat)
        row(f"catalog ({label}): GET /v1/catalog/services, {tags:,} tags", "< 100 ms",
            f"{mid:.1f} ms median of {len(lat)}", mid < 100)  # fmt: skip
        print(
            f"{label}: GET /v1/catalog/services with one {tags:,}-tag service: median "
            f"{statistics.median(lat):.1f} ms over {len(lat)}, first {lat[0]:.1f} ms (goal < 100)"
        )
    finally:
        server.stop()
    sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=10_000, help="services to register")
    p.add_argument("--tags", type=int, default=20_000, help="tags on the one tagged service")
    p.add_argument("--store", choices=("both", "memory", "sqlite"), default="both")
    args = p.parse_args()
    if args.store in ("both", "memory"):
        run("memory", start_server(), args.services, args.tags)
    if args.store in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as d:
            run("sqlite", start_server(data_dir=Path(d)), args.services, args.tags)


if __name__ == "__main__":
    main()
