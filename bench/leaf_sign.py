"""Leaf issuance: CSR signing through ``PUT /v1/loom/connect/ca/sign`` with signing worker
processes, the same in-process, and the old path where the server makes the key
(``GET /v1/agent/connect/ca/leaf/:service``), side by side.

Two real `loom server --dev --acl-default-policy deny` processes, one with
``--ca-sign-workers N`` (default: the server's own default for this machine) and one with
``--ca-sign-workers 0``; every side uses the same token (``service_prefix "" { policy = "write" }``), so each request pays the same ACL check.
The old path caches leaves per service, so every request there names a new service to force
a signing (a fresh key made by the server each time, as every sidecar of a service used to
get). CSRs are made before timing: the agent makes its key and CSR, and that cost is
measured apart (client side, per CSR); each server first signs 200 of them untimed (warm-up). Each side runs on ``--conns`` keep-alive connections
(see the client below); rounds rotate which side goes first, so a busy machine slows all
alike. Beside the wall-clock rates it reports the server's CPU time per signing
(``/proc/PID/stat`` of the server and of its signing workers, summed), and the rate one core
would sustain at that cost: on a machine shared with other work (and with the benchmark's
client threads) the wall-clock rate understates what the server can do. The 1-minute load
average is printed before and after. The issue's goal: >= 2,000 signings/s.

The client is ``bench/httpload.py`` by default (one thread drives every connection with
prepared requests, so it takes little of the CPU the server needs; its own CPU per request is
printed), or ``--client threads`` (``http.client``, a thread per connection, as before).

Run: .venv/bin/python bench/leaf_sign.py [--rounds 5] [--count 600] [--conns 4] [--workers N]
     [--client raw|threads] [--depth 1]
"""

from __future__ import annotations

import argparse
import contextlib
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

from bench import httpload
from bench.procs import cpu_seconds, processes
from bench.report import row, spread
from loom.ca.authority import Signer, new_root
from loom.ca.csr import build_csr, new_key, read_csr
from loom.ca.spiffe import SpiffeId
from loom.control.signpool import default_workers
from tests.support.server import ServerProcess, start_server

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


def _cpu_s(pid: int) -> tuple[float, float]:
    """User + system CPU seconds the process, and its live children (the signing workers),
    have used so far."""
    children = 0.0
    for child in processes(parent=pid):
        with contextlib.suppress(OSError, ValueError, IndexError):  # gone meanwhile
            children += cpu_seconds(child)
    return cpu_seconds(pid), children


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _wait_workers(server: ServerProcess, timeout: float = 30.0) -> str:
    """What the server's "CA signing: ..." log line says (N worker process(es), or in process
    where its default is no workers), once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log_text().splitlines():
            if "CA signing:" in line:
                return line.split("CA signing:", 1)[1].strip()
        time.sleep(0.05)
    raise RuntimeError("the server never said its signing workers started")


def _parallel(
    addr: str, conns: int, work: list[tuple[str, str, bytes | None]], token: str, pid: int,
    client: str = "raw", depth: int = 1,
) -> tuple[float, float, float, float]:
    """Requests per second for ``work`` spread over ``conns`` connections, the CPU seconds
    per request of the server's own process and of its signing workers, and the client's
    own CPU seconds per request. ``client`` "raw": ``bench.httpload`` (one thread, prepared
    requests, ``depth`` in flight per connection); "threads": ``http.client``, one thread
    per connection (the client's CPU is then this whole process's)."""
    if client == "raw":
        headers = {"X-Consul-Token": token}
        prepared = [httpload.prepare(m, p, addr, headers, b) for m, p, b in work]
        opened = httpload.connect(addr, [prepared[i::conns] for i in range(conns)])
        own, children = _cpu_s(pid)
        result = httpload.run(opened, depth)
        own_after, children_after = _cpu_s(pid)
        n = result.count
        return (n / result.elapsed_s, (own_after - own) / n, (children_after - children) / n,
                result.client_cpu_s / n)  # fmt: skip
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
    own, children = _cpu_s(pid)
    start.wait()
    began, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    elapsed, client_cpu = time.perf_counter() - began, time.process_time() - cpu0
    own_after, children_after = _cpu_s(pid)
    for c in clients:
        c.close()
    n = len(work)
    return n / elapsed, (own_after - own) / n, (children_after - children) / n, client_cpu / n


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
    p.add_argument("--workers", type=int, default=None,
                   help="--ca-sign-workers of the first server (default: the server's own)")  # fmt: skip
    p.add_argument("--client", choices=("raw", "threads"), default="raw",
                   help="raw: bench/httpload.py, one thread for every connection (cheap); "
                   "threads: http.client, a thread per connection (what earlier runs used)")
    p.add_argument("--depth", type=int, default=1,
                   help="raw client: requests in flight per connection (>1: pipelining)")  # fmt: skip
    args = p.parse_args()

    acl = ("--acl-default-policy", "deny", "--acl-initial-management-token", ROOT)
    # The server's own default for this machine unless given (test servers default to 0).
    count = default_workers() if args.workers is None else args.workers
    workers = ("--ca-sign-workers", str(count))
    print(f"load average (1 min) before: {_load()} on {os.cpu_count()} CPUs", flush=True)
    server = start_server(*acl, *workers)
    alone = start_server(*acl, "--ca-sign-workers", "0")
    try:
        pool_text = _wait_workers(server)
        mgmt = _conn(server.http)
        policy = json.dumps({"Name": "signer", "Rules": 'service_prefix "" { policy = "write" }'})
        _call(mgmt, "PUT", "/v1/acl/policy", ROOT, policy.encode())
        made = json.loads(_call(mgmt, "PUT", "/v1/acl/token", ROOT,
                                json.dumps({"Policies": [{"Name": "signer"}]}).encode()))  # fmt: skip
        token = made["SecretID"]
        roots = json.loads(_call(mgmt, "GET", "/v1/connect/ca/roots", token))
        trust_domain = roots["TrustDomain"]
        # The in-process server: same policy, same token SecretID, same trust domain (its
        # CSRs must name its own, so it gets CSRs of its own).
        mgmt_alone = _conn(alone.http)
        _call(mgmt_alone, "PUT", "/v1/acl/policy", ROOT, policy.encode())
        _call(mgmt_alone, "PUT", "/v1/acl/token", ROOT, json.dumps(
            {"Policies": [{"Name": "signer"}], "SecretID": token,
             "AccessorID": made["AccessorID"]}).encode())  # fmt: skip
        td_alone = json.loads(_call(mgmt_alone, "GET", "/v1/connect/ca/roots", token))[
            "TrustDomain"
        ]

        ca_rate = _ca_alone(trust_domain)
        began = time.perf_counter()

        def bodies(domain: str) -> list[bytes]:
            return [
                json.dumps({"CSR": build_csr(
                    SpiffeId.of(domain, "default", "dc1", f"s{i % 64}"), new_key()
                )}).encode()
                for i in range(args.count)
            ]  # fmt: skip

        csrs = bodies(trust_domain)
        csr_ms = (time.perf_counter() - began) / args.count * 1000
        csrs_alone = bodies(td_alone)
        # Warm-up, untimed: the first signings after a start pay for imports, caches and a
        # worker's first frames (a round of 200 then cost 800 us a signing against ~450).
        assert server.proc is not None and alone.proc is not None
        for target, pid, warm in ((server.http, server.proc.pid, csrs[:200]),
                                  (alone.http, alone.proc.pid, csrs_alone[:200])):  # fmt: skip
            _parallel(target, args.conns, [("PUT", "/v1/loom/connect/ca/sign", b) for b in warm],
                      token, pid, args.client, args.depth)  # fmt: skip

        names = ["csr", "csr-alone", "server-key"]
        rates: dict[str, list[float]] = {k: [] for k in names}
        cpus: dict[str, list[float]] = {k: [] for k in names}
        fronts: dict[str, list[float]] = {k: [] for k in names}
        clients: dict[str, list[float]] = {k: [] for k in names}
        for r in range(args.rounds):
            sides = names[r % 3 :] + names[: r % 3]
            for side in sides:
                target, pid = server.http, server.proc.pid
                if side == "csr":
                    work = [("PUT", "/v1/loom/connect/ca/sign", body) for body in csrs]
                elif side == "csr-alone":
                    work = [("PUT", "/v1/loom/connect/ca/sign", body) for body in csrs_alone]
                    target, pid = alone.http, alone.proc.pid
                else:  # a new name each time: the leaf cache must miss, so the server signs
                    work = [("GET", f"/v1/agent/connect/ca/leaf/r{r}-s{i}", None)
                            for i in range(args.count)]  # fmt: skip
                rate, front, back, mine = _parallel(target, args.conns, work, token, pid,
                                                    args.client, args.depth)  # fmt: skip
                cpu = front + back
                clients[side].append(mine)
                fronts[side].append(front)
                rates[side].append(rate)
                cpus[side].append(cpu)
                print(f"round {r + 1} {side:>10}: {rate:8.0f} signings/s, "
                      f"server CPU {cpu * 1e6:6.0f} us each ({front * 1e6:4.0f} its own "
                      f"process, {back * 1e6:4.0f} workers); client CPU {mine * 1e6:4.0f} us each",
                      flush=True)  # fmt: skip
    finally:
        server.stop()
        alone.stop()

    print()
    print(f"{'path':<44} {'median/s':>9} {'CPU us':>7} {'1 core/s':>9} {'own us':>7} "
          f"{'own 1 core/s':>12}   goal >= {GOAL:.0f}/s")  # fmt: skip
    for key, label in (("csr", "CSR, signing workers (PUT .../ca/sign)"),
                       ("csr-alone", "CSR, in-process (--ca-sign-workers 0)"),
                       ("server-key", "server makes the key (GET .../ca/leaf/:svc)")):  # fmt: skip
        rate, cpu = statistics.median(rates[key]), statistics.median(cpus[key])
        core = 1 / cpu if cpu else float("inf")
        front = statistics.median(fronts[key])
        verdict = f"wall {'met' if rate >= GOAL else 'NOT met'}, 1 core {'met' if core >= GOAL else 'NOT met'}"
        print(f"{label:<44} {rate:9.0f} {cpu * 1e6:7.0f} {core:9.0f} {front * 1e6:7.0f} "
              f"{1 / front if front else float('inf'):12.0f}   {verdict}")  # fmt: skip
        if key == "csr":
            row("CSR signings/s through the API", ">= 2000/s", spread(rates[key], ".0f", "/s")
                + f", 1 core {core:,.0f}/s", rate >= GOAL)  # fmt: skip
    csr, csr_alone, old = (statistics.median(rates[k]) for k in names)
    print(f"ratio CSR workers / CSR in-process (wall): {csr / csr_alone:.2f}")
    print(f"ratio CSR workers / server-key (wall): {csr / old:.2f}")
    print(f"first server's signing: {pool_text}")
    print(f"load average (1 min) after: {_load()}")
    print(f"agent side, key + CSR (not in the rates above): {csr_ms:.3f} ms each")
    print(f"CA alone, in this process (read + verify the CSR, sign; no HTTP): {ca_rate:.0f}/s")
    mine = statistics.median(v for k in names for v in clients[k])
    print(f"client ({args.client}, depth {args.depth}): {mine * 1e6:.0f} us CPU per request "
          "(median over every side and round), on the same cores as the server")
    print(f"({args.rounds} rounds x {args.count} signings per side, {args.conns} connections)")
    print("CPU us: the server's process and its workers per signing; own: its process alone, "
          "whose 1-core rate bounds what more workers and cores can reach")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
