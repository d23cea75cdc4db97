"""Cross-datacenter data path on loopback with real Envoy (issue 15, "Tests and figures").

The two datacenters of ``tests/e2e/test_cross_dc_upstream.py``: servers dc1 (primary) and dc2
(``--join-wan`` dc1, one trust domain), an HTTP echo ``api`` behind a sidecar in each, a mesh
gateway in each, and a dc1 ``client`` sidecar with two explicit upstreams: ``api`` in dc2 and
``api`` in dc1. proxy-defaults' MeshGateway mode is ``local``, so the dc2 upstream goes client
sidecar -> dc1's gateway -> dc2's gateway -> api's sidecar (mTLS end to end, SNI routing).

1. Added latency: requests at a fixed rate (``bench/fixed_rate.py``, keep-alive) to the dc2
   upstream vs the dc1 upstream (the same request inside one datacenter), in rounds
   alternating A/B then B/A; the medians of per-round p50/p99 and of their differences, with
   spread. The issue sets no goal for it ("-").
2. Intention flips: a deny (then its delete) for ``client -> api`` written in the PRIMARY,
   replicated to dc2 and enforced by dc2's api sidecar; the time from the write's start to
   the first new connection through both gateways that is refused (then answered again).
   p50/p99 over N flips per direction; goal p99 <= 200 ms on loopback.

Run: .venv/bin/python bench/xdc_latency.py [--rate 500] [--seconds 3] [--rounds 4] [--flips 20]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from bench.fixed_rate import fixed_rate, pct
from bench.report import row, spread
from tests.e2e.test_cross_dc_upstream import CrossDc
from tests.e2e.test_cross_dc_upstream import build as build_cross_dc
from tests.support.mesh import envoy_admin, wait_for

FLIP_GOAL_MS = 200.0
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
INTENTION = "/v1/connect/intentions/exact?source=client&destination=api"


def build(tmp: Path) -> tuple[CrossDc, Path]:
    """The e2e's two datacenters in mode ``local``, and dc2's api sidecar's work directory."""
    d = build_cross_dc(tmp)
    try:
        d.mode("local")
        wait_for(lambda: d.cluster_ports() == {d.gw1}, 60, "the client dialling dc1's gateway")
        wait_for(lambda: d.answer() == "hello from dc2", 60, "api in dc2 through both gateways")
        wait_for(lambda: d.answer(d.local_upstream) == "hello from dc1", 60, "api in dc1")
    except BaseException:
        d.close()
        raise
    assert d.api2.work is not None
    return d, d.api2.work


def rbac_denied(work: Path) -> int:
    """Connections the RBAC filters of this sidecar's Envoy refused so far."""
    stats = envoy_admin(work, "/stats?filter=rbac")
    return sum(int(line.rsplit(" ", 1)[1]) for line in stats.splitlines()
               if line.split(":")[0].endswith(".denied"))  # fmt: skip


def answered(port: int) -> bool:
    """One new connection through the client's upstream: did api answer 200?"""
    try:
        with socket.create_connection(("127.0.0.1", port), 2) as s:
            s.settimeout(2)
            s.sendall(REQUEST)
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def flips(d: CrossDc, count: int, timeout: float = 30.0) -> dict[str, list[float]]:
    """Per direction, ms from the write in dc1 to the first probe dc2's sidecar judged anew."""
    out: dict[str, list[float]] = {"deny": [], "allow": []}
    for _ in range(count):
        for kind in ("deny", "allow"):
            t0 = time.perf_counter()
            if kind == "deny":
                status, body = d.dc1.request("PUT", INTENTION, {"Action": "deny"})[:2]
            else:
                status, body = d.dc1.request("DELETE", INTENTION)[:2]
            assert status == 200, (status, body)
            while answered(d.upstream) == (kind == "deny"):
                assert time.perf_counter() - t0 < timeout, f"{kind} never enforced in dc2"
            out[kind].append((time.perf_counter() - t0) * 1000)
    return out


def latency(d: CrossDc, rate: int, seconds: float, rounds: int) -> None:
    per_round: dict[str, list[tuple[float, float]]] = {"local": [], "xdc": []}
    errors = {"local": 0, "xdc": 0}
    sides = (("local", d.local_upstream), ("xdc", d.upstream))
    for r in range(rounds):
        for name, port in sides if r % 2 == 0 else tuple(reversed(sides)):
            lat, _, failed = uvloop.run(fixed_rate("127.0.0.1", port, rate, seconds))
            errors[name] += failed
            per_round[name].append((statistics.median(lat), pct(lat, 99)))
    print(f"fixed rate {rate} req/s, keep-alive, 16 connections, {rounds} rounds of "
          f"{seconds:g} s per side, per-round figures:")  # fmt: skip
    for name, label in (("local", "inside dc1"), ("xdc", "dc1 -> dc2")):
        print(f"  {label:10}: p50 {spread([x[0] for x in per_round[name]], '.3f', ' ms')}  "
              f"p99 {spread([x[1] for x in per_round[name]], '.3f', ' ms')}  "
              f"({errors[name]} failed requests)")  # fmt: skip
    pairs = list(zip(per_round["local"], per_round["xdc"], strict=True))
    added50 = [x[0] - lo[0] for lo, x in pairs]
    added99 = [x[1] - lo[1] for lo, x in pairs]
    print(f"  added by two gateways: p50 {spread(added50, '+.3f', ' ms')}, "
          f"p99 {spread(added99, '+.3f', ' ms')}")  # fmt: skip
    row(f"added p50, dc1 -> dc2 through both gateways vs inside dc1, {rate} req/s", "-",
        spread(added50, "+.3f", " ms"), None)  # fmt: skip
    row(f"added p99, dc1 -> dc2 through both gateways vs inside dc1, {rate} req/s", "-",
        spread(added99, "+.3f", " ms"), None)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=6, help="fixed-rate rounds per side")
    ap.add_argument("--flips", type=int, default=50, help="deny + allow flips")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loom-bench-xdc-"))
    d, api2 = build(tmp)
    try:
        latency(d, args.rate, args.seconds, args.rounds)
        before = rbac_denied(api2)
        flipped = flips(d, args.flips)
        # the refusals were dc2's api sidecar's (the destination's), not dc1's
        denied = rbac_denied(api2) - before
        print(f"dc2's api sidecar refused {denied} connections during the flips")
        assert denied >= args.flips, f"dc2's api sidecar refused only {denied} connections"
        for kind, label in (("deny", "deny"), ("allow", "allow after delete")):
            values = flipped[kind]
            p99, p50 = pct(values, 99), statistics.median(values)
            row(f"intention {label} in primary -> enforced in dc2's sidecar, p99",
                f"<= {FLIP_GOAL_MS:.0f} ms",
                f"p99 {p99:.1f} ms, p50 {p50:.1f} ms over {len(values)} flips",
                p99 <= FLIP_GOAL_MS)  # fmt: skip
        return 0
    finally:
        d.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
