"""A root rotation in the primary, seen in a secondary (issue 15, federated CA).

Two real ``loom server --dev`` processes on loopback, dc1 (primary) and dc2 (secondary,
``--join-wan`` dc1). Each rotation writes a new root to dc1's ``/v1/connect/ca/configuration``;
two watchers parked on blocking ``GET /v1/connect/ca/roots?index=`` measure the time from the
write's start to the first answer whose active root is the new one:

- local: on dc1 itself (what a rotation costs without the WAN);
- remote: on dc2, whose answer needs dc2's blocking query on dc1's roots to wake, a new key
  and CA request, dc1 signing it, and dc2 storing intermediate and roots in one write.

Both watch the same rotation. Prints the medians with their spread and the remote p99.

Run: .venv/bin/python bench/fedca_rotation.py [--rotations N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from loom.ca.authority import new_root
from tests.support.federation import names_all, until_states
from tests.support.server import ServerProcess, start_server

ROOTS = "/v1/connect/ca/roots"


def _conn(addr: str) -> http.client.HTTPConnection:
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def _roots(c: http.client.HTTPConnection, query: str = "") -> tuple[Any, int]:
    c.request("GET", ROOTS + query)
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body)
    return json.loads(body), int(r.getheader("X-Consul-Index") or 0)


def _watch(server: ServerProcess, wanted: str, index: int, out: list[float]) -> None:
    """Park on ``server``'s roots from ``index`` until the active root is ``wanted``."""
    c = _conn(server.http)
    while True:
        body, index = _roots(c, f"?index={index}&wait=10s")
        if body["ActiveRootID"] == wanted:
            out.append(time.perf_counter())
            return


def _rotate(dc1: ServerProcess, dc2: ServerProcess, trust_domain: str) -> tuple[float, float]:
    root = new_root(trust_domain, dt.datetime.now(dt.UTC))
    starts = [_roots(_conn(s.http))[1] for s in (dc1, dc2)]
    seen: list[list[float]] = [[], []]
    threads = [
        threading.Thread(target=_watch, args=(s, root.id, i, out), daemon=True)
        for s, i, out in zip((dc1, dc2), starts, seen, strict=True)
    ]
    for t in threads:
        t.start()
    time.sleep(0.02)  # both watchers' requests are parked on their servers
    body = {"Provider": "consul", "Config": {"PrivateKey": root.key_pem, "RootCert": root.cert_pem}}
    c = _conn(dc1.http)
    start = time.perf_counter()
    c.request("PUT", "/v1/connect/ca/configuration", json.dumps(body).encode())
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
    for t in threads:
        t.join(30)
    assert all(seen), "a watcher never saw the new root"
    return (seen[0][0] - start) * 1000, (seen[1][0] - start) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rotations", type=int, default=30)
    args = p.parse_args()
    dc1 = start_server("--datacenter", "dc1")
    dc2 = None
    try:
        dc2 = start_server(
            "--datacenter", "dc2", "--primary-datacenter", "dc1", "--join-wan", dc1.http
        )
        until_states(dc2, names_all("dc1", "dc2"))
        deadline = time.monotonic() + 30
        while dc2.request("GET", ROOTS)[0] != 200:
            assert time.monotonic() < deadline, "dc2 never federated"
            time.sleep(0.05)
        trust_domain = dc1.get(ROOTS)["TrustDomain"]
        local, remote = [], []
        for _ in range(args.rotations):
            near, far = _rotate(dc1, dc2, trust_domain)
            local.append(near)
            remote.append(far)
        p99 = statistics.quantiles(remote, n=100)[98] if len(remote) >= 2 else remote[0]
        print(f"local (dc1):  {report.spread(local, '.1f', ' ms')}")
        print(f"remote (dc2): {report.spread(remote, '.1f', ' ms')}")
        report.row(
            "root rotation in primary -> secondary's new intermediate and roots, p99",
            "-",
            f"{p99:.1f} ms (median {statistics.median(remote):.1f} ms; "
            f"local {statistics.median(local):.1f} ms)",
            None,
        )
        return 0
    finally:
        if dc2 is not None:
            dc2.stop()
        dc1.stop()


if __name__ == "__main__":
    sys.exit(main())
