"""What ACL checks cost on the HTTP API: ACLs off vs on, side by side, same machine.

For each of three real `loom server --dev` processes (ACLs off; ACLs deny with a service
token; ACLs deny with the management token) it measures, over one keep-alive connection:
registrations per second (service + sidecar, the service token holds the service identity
of ``reg``) and reads per second of ``/v1/health/service/reg`` (filtered by service:read and
node:read), then blocking-query wake-up latency after a write. The issue's goal: ACLs cost
at most 10%.

The machine is shared and noisy, more than the effect, so the figures are per round: many
short rounds, in each of which the three cases take turns ten requests at a time (the order
alternating), and the cost is that round's ``1 - on/off``. A slow spell then slows both sides of a ratio alike;
the median of the per-round ratios, with quartiles and range, is the figure, and a row says
whether the median's 95% interval lies on one side of the goal (resolved) or spans it.

Run: .venv/bin/python bench/acl_overhead.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import row, spread
from tests.support.server import ServerProcess, start_server

ROOT = str(uuid.uuid4())


def _conn(addr: str) -> http.client.HTTPConnection:
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def _call(
    c: http.client.HTTPConnection, method: str, path: str, token: str, body: object = None
) -> bytes:
    headers = {"X-Consul-Token": token} if token else {}
    c.request(method, path, None if body is None else json.dumps(body), headers)
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (path, r.status, data)
    return data


def registrations(addr: str, token: str, count: int = 300) -> float:
    c = _conn(addr)
    start = time.perf_counter()
    for i in range(count):
        body = {"Name": "reg", "ID": f"reg-{i % 50}", "Port": 8000 + i % 50,
                "Connect": {"SidecarService": {}}}  # fmt: skip
        _call(c, "PUT", "/v1/agent/service/register", token, body)
    return count / (time.perf_counter() - start)


def reads(addr: str, token: str, count: int = 600) -> float:
    c = _conn(addr)
    start = time.perf_counter()
    for _ in range(count):
        _call(c, "GET", "/v1/health/service/reg", token)
    return count / (time.perf_counter() - start)


def wakeups(addr: str, token: str, rounds: int = 30) -> list[float]:
    lat = []
    c = _conn(addr)
    for i in range(rounds):
        c.request(
            "GET", "/v1/health/service/reg", headers={"X-Consul-Token": token} if token else {}
        )
        r = c.getresponse()
        r.read()
        index = r.getheader("X-Consul-Index")
        woke: list[float] = []

        def watch(index: str = str(index), woke: list[float] = woke) -> None:
            w = _conn(addr)
            _call(w, "GET", f"/v1/health/service/reg?index={index}&wait=30s", token)
            woke.append(time.perf_counter())

        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.05)  # the watcher is parked
        sent = time.perf_counter()
        body = {"Name": "reg", "ID": f"reg-w{i}", "Port": 9000 + i}
        _call(c, "PUT", "/v1/agent/service/register", token, body)
        t.join()
        lat.append((woke[0] - sent) * 1000)
    return lat


def service_token(server: ServerProcess) -> str:
    status, token, _ = server.request(
        "PUT", "/v1/acl/token", {"ServiceIdentities": [{"ServiceName": "reg"}]},
        {"X-Consul-Token": ROOT},
    )  # fmt: skip
    assert status == 200, token
    return str(token["SecretID"])


def quartiles(values: list[float]) -> tuple[float, float]:
    """The lower and upper quartile (the median of each half for fewer than 4 values)."""
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def median_interval(values: list[float]) -> tuple[float, float]:
    """A distribution-free ~95% confidence interval of the median: the order statistics at
    ranks n/2 -+ 0.98 sqrt(n) (the binomial's normal approximation). Unlike the quartiles it
    narrows as rounds are added, which is what lets more rounds resolve a small effect."""
    ordered = sorted(values)
    n = len(ordered)
    half = 0.98 * math.sqrt(n)
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half) - 1)
    return ordered[low], ordered[high]


def verdict(costs: list[float], goal: float) -> tuple[bool, str]:
    """Met when the median cost is within the goal; the note says whether the rounds resolve
    that (the median's 95% interval all on one side of the goal) or the noise still hides it."""
    low, high = median_interval(costs)
    span = f"median's 95% interval {low:+.1%}..{high:+.1%}"
    if high <= goal:
        return True, f"resolved: {span}, within the goal"
    if low > goal:
        return False, f"resolved: {span}, over the goal"
    return statistics.median(costs) <= goal, f"not resolved: {span} spans the goal"


class Side:
    """One case's keep-alive connection and the time its requests took this round."""

    def __init__(self, addr: str, token: str) -> None:
        self.conn = _conn(addr)
        self.token = token
        self.reg_time = self.get_time = 0.0
        self.reg_count = self.get_count = 0
        self.next_id = 0

    def register(self, count: int) -> None:
        start = time.perf_counter()
        for _ in range(count):
            i = self.next_id = (self.next_id + 1) % 50
            body = {"Name": "reg", "ID": f"reg-{i}", "Port": 8000 + i,
                    "Connect": {"SidecarService": {}}}  # fmt: skip
            _call(self.conn, "PUT", "/v1/agent/service/register", self.token, body)
        self.reg_time += time.perf_counter() - start
        self.reg_count += count

    def read(self, count: int) -> None:
        start = time.perf_counter()
        for _ in range(count):
            _call(self.conn, "GET", "/v1/health/service/reg", self.token)
        self.get_time += time.perf_counter() - start
        self.get_count += count


def measure_round(
    sides: dict[str, Side], order: list[str], regs: int, gets: int, chunk: int
) -> dict[str, tuple[float, float]]:
    """One round: every case's registrations/s and reads/s. The cases take turns ``chunk``
    requests at a time (in ``order``, then reversed, and so on), so a slow spell of the
    machine falls on all of them within a few milliseconds of each other."""
    for side in sides.values():
        side.reg_time = side.get_time = 0.0
        side.reg_count = side.get_count = 0
    for what, total in (("register", regs), ("read", gets)):
        turn = list(order)
        for _ in range(max(1, total // chunk)):
            for name in turn:
                getattr(sides[name], what)(chunk)
            turn.reverse()
    return {
        name: (side.reg_count / side.reg_time, side.get_count / side.get_time)
        for name, side in sides.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="paired rounds (default 30)")
    parser.add_argument("--registrations", type=int, default=80, help="per case per round")
    parser.add_argument("--reads", type=int, default=200, help="per case per round")
    parser.add_argument("--chunk", type=int, default=10, help="requests per turn (default 10)")
    parser.add_argument("--wakeups", type=int, default=10, help="blocking wake-ups per case")
    args = parser.parse_args()
    off = start_server()
    on = start_server("--acl-default-policy", "deny", "--acl-initial-management-token", ROOT)
    try:
        cases = {"ACLs off": (off.http, ""), "ACLs on, service token": (on.http, service_token(on)),
                 "ACLs on, management token": (on.http, ROOT)}  # fmt: skip
        sides = {name: Side(addr, token) for name, (addr, token) in cases.items()}
        measure_round(sides, list(cases), 40, 100, args.chunk)  # warm servers and connections
        # Per round, each ACL side's throughput divided by the ACLs-off figure measured right
        # beside it; the order alternates, so neither side always runs on a warmer machine.
        ratios: dict[str, dict[str, list[float]]] = {
            name: {"registrations/s": [], "health reads/s": []} for name in cases
        }
        raw: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(reversed(cases))
            got = measure_round(sides, order, args.registrations, args.reads, args.chunk)
            base_reg, base_get = got["ACLs off"]
            for name, (reg, get) in got.items():
                raw[name].append((reg, get))
                ratios[name]["registrations/s"].append(reg / base_reg)
                ratios[name]["health reads/s"].append(get / base_get)
        for name in cases:
            regs = [reg for reg, _ in raw[name]]
            gets = [get for _, get in raw[name]]
            wake = wakeups(*cases[name], args.wakeups)
            print(
                f"{name:27s} registrations {spread(regs, ',.0f', '/s')}, "
                f"health reads {spread(gets, ',.0f', '/s')}, "
                f"blocking wake-up p50 {statistics.median(wake):.2f} ms"
            )
        goal = 0.10
        for name in ("ACLs on, service token", "ACLs on, management token"):
            for what, per in ratios[name].items():
                low, high = quartiles(per)
                ci_low, ci_high = median_interval(per)
                print(
                    f"{name}: {what} on/off per round: median {statistics.median(per):.3f} "
                    f"(95% interval {ci_low:.3f}..{ci_high:.3f}), quartiles {low:.3f}..{high:.3f}, "
                    f"range {min(per):.3f}..{max(per):.3f} over {len(per)} rounds"
                )
                costs = [1 - ratio for ratio in per]
                met, note = verdict(costs, goal)
                figure = spread([c * 100 for c in costs], "+.1f", "%")
                who = "ACLs on" if "service" in name else "ACLs on (management token)"
                row(f"{who}: {what} cost", "<= 10%", figure, met, f"1 - on/off per round; {note}")
    finally:
        off.stop()
        on.stop()


if __name__ == "__main__":
    main()
