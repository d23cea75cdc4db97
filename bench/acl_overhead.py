"""What ACL checks cost on the HTTP API: ACLs off vs on, side by side, same machine.

For each of three real `loom server --dev` processes (ACLs off; ACLs deny with a service
token; ACLs deny with the management token) it measures, over one keep-alive connection:
registrations per second (service + sidecar, the service token holds the service identity
of ``reg``) and reads per second of ``/v1/health/service/reg`` (filtered by service:read and
node:read), then blocking-query wake-up latency after a write. Rounds are interleaved so a
busy machine slows all three alike. The issue's goal: ACLs cost at most 10%.

Run: .venv/bin/python bench/acl_overhead.py
"""

from __future__ import annotations

import argparse
import http.client
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    off = start_server()
    on = start_server("--acl-default-policy", "deny", "--acl-initial-management-token", ROOT)
    try:
        cases = {"ACLs off": (off.http, ""), "ACLs on, service token": (on.http, service_token(on)),
                 "ACLs on, management token": (on.http, ROOT)}  # fmt: skip
        regs: dict[str, list[float]] = {k: [] for k in cases}
        gets: dict[str, list[float]] = {k: [] for k in cases}
        wake: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(reversed(cases))
            for name in order:
                addr, token = cases[name]
                regs[name].append(registrations(addr, token))
                gets[name].append(reads(addr, token))
                wake[name].extend(wakeups(addr, token, 10))
        base_r, base_g = statistics.median(regs["ACLs off"]), statistics.median(gets["ACLs off"])
        for name in cases:
            r, g = statistics.median(regs[name]), statistics.median(gets[name])
            print(
                f"{name:27s} registrations {r:6,.0f}/s ({r / base_r - 1:+.1%}), "
                f"health reads {g:6,.0f}/s ({g / base_g - 1:+.1%}), "
                f"blocking wake-up p50 {statistics.median(wake[name]):.2f} ms"
            )
        # Costs per round (ACLs on, service token, vs off in the same round).
        name = "ACLs on, service token"
        for what, per in (("registrations/s", regs), ("health reads/s", gets)):
            cost = [1 - on / off for on, off in zip(per[name], per["ACLs off"], strict=True)]
            row(f"ACLs on: {what} cost", "<= 10%", spread([c * 100 for c in cost], "+.1f", "%"),
                statistics.median(cost) <= 0.10)  # fmt: skip
    finally:
        off.stop()
        on.stop()


if __name__ == "__main__":
    main()
