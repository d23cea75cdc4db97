"""Leaf issuance: CSR signing through ``PUT /v1/loom/connect/ca/sign`` vs the old path where
the server makes the key (``GET /v1/agent/connect/ca/leaf/:service``), side by side.

One real `loom server --dev --acl-default-policy deny` process; both sides use the same
token (``service_prefix "" { policy = "write" }``), so each request pays the same ACL check.
The old path caches leaves per service, so every request there names a new service to force
a signing (a fresh key made by the server each time, as every sidecar of a service used to
get). CSRs are made before timing: the agent makes its key and CSR, and that cost is
measured apart (client side, per CSR). Each side runs on ``--conns`` keep-alive connections
(one thread each); rounds alternate which side goes first, so a busy machine slows both
alike. Beside the wall-clock rates it reports the server process's own CPU time per
signing (``/proc/PID/stat``), and the rate one core would sustain at that cost: on a machine
shared with other work (and with the benchmark's client threads) the wall-clock rate
understates what the server can do. The issue's goal: >= 2,000 signings/s.

Run: .venv/bin/python bench/leaf_sign.py [--rounds 5] [--count 600] [--conns 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import row, spread
from loom.ca.authority import Signer, new_root
from loom.ca.csr import build_csr, new_key, read_csr
from loom.ca.spiffe import SpiffeId
from tests.support.server import start_server

ROOT = str(uuid.uuid4())
GOAL = 2000.0


def _conn(addr: str) -> http.client.HTTPConnection:
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def _call(c: http.client.HTTPConnection, method: str, path: str, token: str,
          body: bytes | None = None) -> bytes:  # fmt: skip
    c.request(method, path, body, {"X-Consul-Token": token})
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (path, r.status, data)
    return data


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parallel(
    addr: str, conns: int, work: list[tuple[str, str, bytes | None]], token: str, pid: int
) -> tuple[float, float]:
    """Requests per second for ``work`` spread over ``conns`` connections, and the server's
    CPU seconds per request."""
    shares = [work[i::conns] for i in range(conns)]
    clients = [_conn(addr) for _ in range(conns)]
    for c in clients:  # connect before timing
        _call(c, "GET", "/v1/status/leader", token)
    start = threading.Barrier(conns + 1)

    def run(c: http.client.HTTPConnection, share: list[tuple[str, str, bytes | None]]) -> None:
        start.wait()
        for method, path, body in share:
            _call(c, method, path, token, body)

    threads = [
        threading.Thread(target=run, args=(c, s)) for c, s in zip(clients, shares, strict=True)
    ]
    for t in threads:
        t.start()
    cpu = _cpu_s(pid)
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    cpu = _cpu_s(pid) - cpu
    for c in clients:
        c.close()
    return len(work) / elapsed, cpu / len(work)


def _ca_alone(trust_domain: str, count: int = 300) -> float:
    """Signings per second of the CA code itself: ``read_csr`` then ``Signer.sign``."""
    now = dt.datetime.now(dt.UTC)
    signer = Signer(new_root(trust_domain, now))
    pems = [build_csr(SpiffeId.of(trust_domain, "default", "dc1", "web"), new_key())
            for _ in range(count)]  # fmt: skip
    began = time.perf_counter()
    for pem in pems:
        checked = read_csr(pem)
        signer.sign(checked.identity, checked.public_key(), now)
    return count / (time.perf_counter() - began)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--count", type=int, default=600, help="signings per side per round")
    p.add_argument("--conns", type=int, default=4, help="keep-alive connections per side")
    args = p.parse_args()

    server = start_server("--acl-default-policy", "deny", "--acl-initial-management-token", ROOT)
    try:
        mgmt = _conn(server.http)
        policy = json.dumps({"Name": "signer", "Rules": 'service_prefix "" { policy = "write" }'})
        _call(mgmt, "PUT", "/v1/acl/policy", ROOT, policy.encode())
        made = json.loads(_call(mgmt, "PUT", "/v1/acl/token", ROOT,
                                json.dumps({"Policies": [{"Name": "signer"}]}).encode()))  # fmt: skip
        token = made["SecretID"]
        roots = json.loads(_call(mgmt, "GET", "/v1/connect/ca/roots", token))
        trust_domain = roots["TrustDomain"]

        ca_rate = _ca_alone(trust_domain)
        began = time.perf_counter()
        csrs = [
            json.dumps(
                {
                    "CSR": build_csr(
                        SpiffeId.of(trust_domain, "default", "dc1", f"s{i % 64}"), new_key()
                    )
                }
            ).encode()
            for i in range(args.count)
        ]
        csr_ms = (time.perf_counter() - began) / args.count * 1000

        rates: dict[str, list[float]] = {"csr": [], "server-key": []}
        cpus: dict[str, list[float]] = {"csr": [], "server-key": []}
        assert server.proc is not None
        pid = server.proc.pid
        for r in range(args.rounds):
            sides = ["csr", "server-key"] if r % 2 == 0 else ["server-key", "csr"]
            for side in sides:
                if side == "csr":
                    work = [("PUT", "/v1/loom/connect/ca/sign", body) for body in csrs]
                else:  # a new name each time: the leaf cache must miss, so the server signs
                    work = [("GET", f"/v1/agent/connect/ca/leaf/r{r}-s{i}", None)
                            for i in range(args.count)]  # fmt: skip
                rate, cpu = _parallel(server.http, args.conns, work, token, pid)
                rates[side].append(rate)
                cpus[side].append(cpu)
                print(f"round {r + 1} {side:>10}: {rate:8.0f} signings/s, "
                      f"server CPU {cpu * 1e6:6.0f} us each", flush=True)  # fmt: skip
    finally:
        server.stop()

    print()
    print(f"{'path':<44} {'median/s':>9} {'CPU us':>7} {'1 core/s':>9}   goal >= {GOAL:.0f}/s")
    for key, label in (("csr", "CSR signed (PUT /v1/loom/connect/ca/sign)"),
                       ("server-key", "server makes the key (GET .../ca/leaf/:svc)")):  # fmt: skip
        rate, cpu = statistics.median(rates[key]), statistics.median(cpus[key])
        core = 1 / cpu if cpu else float("inf")
        verdict = f"wall {'met' if rate >= GOAL else 'NOT met'}, 1 core {'met' if core >= GOAL else 'NOT met'}"
        print(f"{label:<44} {rate:9.0f} {cpu * 1e6:7.0f} {core:9.0f}   {verdict}")
        if key == "csr":
            row("CSR signings/s through the API", ">= 2000/s", spread(rates[key], ".0f", "/s")
                + f", 1 core {core:,.0f}/s", rate >= GOAL)  # fmt: skip
    csr, old = (statistics.median(rates[k]) for k in ("csr", "server-key"))
    print(f"ratio CSR / server-key (wall): {csr / old:.2f}")
    print(f"agent side, key + CSR (not in the rates above): {csr_ms:.3f} ms each")
    print(f"CA alone, in this process (read + verify the CSR, sign; no HTTP): {ca_rate:.0f}/s")
    print(f"({args.rounds} rounds x {args.count} signings per side, {args.conns} connections)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
