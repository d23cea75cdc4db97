"""Data-path benchmarks on loopback with real Envoy, measured side by side in one run.

1. Intention write -> first denied new connection, and delete -> first allowed one (100
   flips by default): p50/p99. Goal (issue 17): both p99 <= 50 ms.
2. Request latency at a fixed rate (default 1,000 req/s, keep-alive), direct to the app vs
   through both sidecars (client upstream listener -> mTLS -> server public listener -> app),
   both sides paired in each round (one client, requests interleaved: bench/fixed_rate.py;
   the direct side has an app process of its own, so neither queues behind the other there),
   the side leading the interleave alternating by round, the median of per-round figures;
   plus closed-loop max throughput with wrk when installed.
   Goal: added p99 <= 0.5 ms at 1,000 req/s.

Run: .venv/bin/python bench/mesh_latency.py [--rate 1000] [--seconds 5] [--flips 100] [--rounds 8] [--no-wrk]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from bench.fixed_rate import paired_fixed_rate, pct
from bench.procs import CpuMeter, envoys, per_request_us, sidecar_report
from bench.report import Steal, row, spread, verdict
from tests.support.mesh import curl, free_port, start_dataplane, start_echo, wait_for
from tests.support.server import start_server

FLIP_GOAL_MS = 50.0
ADDED_P99_GOAL_MS = 0.5
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def wrk(port: int, seconds: int) -> float | None:
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout  # fmt: skip
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def denied_now(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(1)
            s.sendall(REQUEST)
            return s.recv(100) == b""
    except OSError:
        return True


def flips(server, port: int, count: int) -> dict[str, tuple[list[float], list[float]]]:  # type: ignore[no-untyped-def]
    """Per direction: write -> first new connection enforced (ms), and how long that last,
    deciding probe took by itself. An allowed probe needs the app's answer (two more hops and
    a Python echo server), a denied one only the server sidecar's close: the deciding probe's
    time is part of each flip, so it is reported beside it."""
    q = "/v1/connect/intentions/exact?source=static-client&destination=static-server"
    out: dict[str, tuple[list[float], list[float]]] = {"deny": ([], []), "allow": ([], [])}
    for _ in range(count):
        for kind in ("deny", "allow"):
            t0 = time.perf_counter()
            if kind == "deny":
                server.put(q, {"Action": "deny"})
            else:
                server.request("DELETE", q)
            while True:
                probe = time.perf_counter()
                if denied_now(port) == (kind == "deny"):
                    break
            done = time.perf_counter()
            out[kind][0].append((done - t0) * 1000)
            out[kind][1].append((done - probe) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--flips", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=8, help="paired fixed-rate rounds")
    ap.add_argument("--no-wrk", action="store_true", help="skip the closed-loop wrk run")
    ap.add_argument(
        "--envoy-concurrency", type=int, default=2,
        help="Envoy worker threads per sidecar (default 2, the dataplane's default)",
    )  # fmt: skip
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    server = start_server()
    procs = []
    try:
        app, up, s_side, c_side = free_port(), free_port(), free_port(), free_port()
        procs.append(start_echo(tmp, "hello world", app))
        # The direct side's own app, alike: paired sides never queue behind each other there.
        plain = free_port()
        procs.append(start_echo(tmp, "hello world", plain))
        server.put("/v1/agent/service/register", {"Name": "static-server", "Port": app,
                   "Connect": {"SidecarService": {"Port": s_side}}})  # fmt: skip
        server.put("/v1/agent/service/register", {"Name": "static-client", "Port": free_port(),
                   "Connect": {"SidecarService": {"Port": c_side, "Proxy": {"Upstreams": [
                       {"DestinationName": "static-server", "LocalBindPort": up}]}}}})  # fmt: skip
        extra = ("--envoy-concurrency", str(args.envoy_concurrency))
        dataplanes = {}
        for side in ("server", "client"):
            dp = start_dataplane(tmp, f"static-{side}-sidecar-proxy", server.http, server.grpc,
                                 *extra)  # fmt: skip
            procs.append(dp)
            dataplanes[side] = dp.p.pid
        wait_for(lambda: curl(f"http://127.0.0.1:{up}/")[1] == "hello world\n", 30, "mesh")
        # Each dataplane's Envoy: what they use during a round is the mesh side's alone.
        meter = CpuMeter({side: envoys(parent=pid) for side, pid in dataplanes.items()})
        sidecar_cpu: list[dict[str, tuple[float, float]]] = []
        mesh_requests: list[int] = []

        flipped = flips(server, up, args.flips)
        for kind, label in (("deny", "deny"), ("allow", "allow after delete")):
            values, probes = flipped[kind]
            p99 = pct(values, 99)
            print(f"intention {label} -> first new connection enforced: p50 "
                  f"{statistics.median(values):.1f} ms, p99 {p99:.1f} ms over {len(values)} flips; "
                  f"of which the deciding probe itself: p50 {statistics.median(probes):.1f} ms, "
                  f"p99 {pct(probes, 99):.1f} ms")  # fmt: skip
            row(f"intention {label} -> enforced, p99", "<= 50 ms",
                f"p99 {p99:.1f} ms, p50 {statistics.median(values):.1f} ms over {len(values)} flips"
                f" (deciding probe p50 {statistics.median(probes):.1f} ms)", p99 <= FLIP_GOAL_MS)  # fmt: skip

        # Paired rounds: one client sends to both sides at once, each at the full rate, their
        # requests interleaved, so a stall of the machine lands on both alike; which side leads
        # the interleave alternates by round. The figure is the median of per-round differences.
        per_round: dict[str, list[tuple[float, float]]] = {"direct": [], "mesh": []}
        rates: dict[str, list[float]] = {"direct": [], "mesh": []}
        steals: list[float] = []
        sides = (("direct", plain), ("mesh", up))
        for r in range(args.rounds):
            order = sides if r % 2 == 0 else tuple(reversed(sides))
            stolen = Steal()
            meter.start()
            measured = uvloop.run(paired_fixed_rate(
                [("127.0.0.1", port) for _, port in order], args.rate, args.seconds))  # fmt: skip
            sidecar_cpu.append(meter.stop())
            steals.append(stolen.pct())
            for (name, _), side in zip(order, measured, strict=True):
                if name == "mesh":
                    mesh_requests.append(len(side.latencies))
                if side.errors:
                    print(f"  ({name}: {side.errors} failed requests)")
                per_round[name].append((statistics.median(side.latencies), pct(side.latencies, 99)))
                rates[name].append(side.rate)
        added50 = [m[0] - d[0] for d, m in zip(per_round["direct"], per_round["mesh"], strict=True)]
        added99 = [m[1] - d[1] for d, m in zip(per_round["direct"], per_round["mesh"], strict=True)]
        print(f"fixed rate {args.rate} req/s to each side, paired, keep-alive, 16 warm connections "
              f"each, {args.rounds} rounds of {args.seconds:g} s, per-round medians:")  # fmt: skip
        for name in ("direct", "mesh"):
            print(f"  {name:6}: p50 {spread([x[0] for x in per_round[name]], '.3f', ' ms')}  "
                  f"p99 {spread([x[1] for x in per_round[name]], '.3f', ' ms')}  "
                  f"({statistics.mean(rates[name]):.0f} req/s)")  # fmt: skip
        print(f"  added by two sidecars + mTLS: p50 {spread(added50, '+.3f', ' ms')}, "
              f"p99 {spread(added99, '+.3f', ' ms')} (Istio's published best +2.7 ms p99)")  # fmt: skip
        print("  per round, added p99 / host steal: " + ", ".join(
            f"{a:+.2f} ms / {s:.1f}%" for a, s in zip(added99, steals, strict=True)))  # fmt: skip
        figure, met = verdict(added99, steals, "+.3f", " ms",
                              lambda vs: statistics.median(vs) <= ADDED_P99_GOAL_MS)
        row(f"added p99, mesh vs direct, {args.rate} req/s", "<= +0.5 ms", figure, met)
        sidecar_report(per_request_us(sidecar_cpu, mesh_requests), f"{args.rate} req/s")
        if args.no_wrk:
            return
        wd, wm = wrk(plain, 5), wrk(up, 5)
        if wd and wm:
            print(
                f"max throughput (wrk -t2 -c16, closed loop): direct {wd:,.0f} req/s, mesh {wm:,.0f} req/s, "
                f"ratio mesh/direct {wm / wd:.2f}"
            )
    finally:
        for p in reversed(procs):
            p.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
