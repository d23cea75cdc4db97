"""An intention written in the primary, seen in a secondary (issue 15): replication latency.

Two real ``loom server --dev`` processes on loopback, dc1 (primary) and dc2 (secondary,
``--join-wan`` dc1). Each write flips one intention (``web -> db``) between allow and deny
in dc1; a watcher parked on a blocking ``GET /v1/connect/intentions?index=`` measures the
time from the write's start to the answer that shows the new action:

- remote: the watcher is on dc2 (the write crosses replication: dc2's blocking query on
  dc1's dump wakes, the round is applied, dc2's own blocking query wakes);
- local: the same write, watched on dc1 itself (what a write costs without the WAN).

Rounds alternate which side goes first, so a busy machine slows both alike. Medians per
round with their spread, p99 of every remote write against the goal (<= 200 ms on
loopback), and the remote/local difference.

Run: .venv/bin/python bench/replication.py [--rounds N] [--writes N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report
from tests.support.federation import names_all, until_states
from tests.support.server import ServerProcess, start_server

PATH = "/v1/connect/intentions"
WRITE = "/v1/connect/intentions/exact?source=web&destination=db"
GOAL_MS = 200.0


def _conn(addr: str) -> http.client.HTTPConnection:
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def _get(c: http.client.HTTPConnection, path: str) -> tuple[list[dict[str, object]], int]:
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (path, r.status, body)
    return json.loads(body), int(r.getheader("X-Consul-Index") or 0)


def _action(intentions: list[dict[str, object]]) -> str | None:
    for i in intentions:
        if i.get("SourceName") == "web" and i.get("DestinationName") == "db":
            return str(i.get("Action"))
    return None


class Watcher:
    """A blocking-query loop on one server; ``wait_for(action)`` returns when an answer
    showing that action arrived (its arrival time)."""

    def __init__(self, server: ServerProcess) -> None:
        self.conn = _conn(server.http)
        self.cond = threading.Condition()
        self.seen: tuple[str | None, float] = (None, 0.0)
        self.parked = threading.Event()
        self.stop = False
        _, self.index = _get(self.conn, PATH)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            self.parked.set()
            found, index = _get(self.conn, f"{PATH}?index={self.index}&wait=5s")
            at = time.perf_counter()
            self.parked.clear()
            self.index = index
            with self.cond:
                self.seen = (_action(found), at)
                self.cond.notify_all()

    def wait_for(self, action: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.seen[0] != action:
                left = deadline - time.monotonic()
                assert left > 0, f"never saw {action}"
                self.cond.wait(left)
            return self.seen[1]


def _write(c: http.client.HTTPConnection, action: str) -> float:
    start = time.perf_counter()
    c.request("PUT", WRITE, json.dumps({"Action": action}).encode())
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
    return start


def _measure(writer: http.client.HTTPConnection, watcher: Watcher, state: list[str]) -> float:
    """One flip of the intention, in ms from the write's start to the watcher's answer."""
    action = "deny" if state[0] == "allow" else "allow"
    state[0] = action
    watcher.parked.wait(5)
    time.sleep(0.005)  # the watcher's request is on its way to park on the server
    start = _write(writer, action)
    return (watcher.wait_for(action) - start) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--writes", type=int, default=40, help="writes per side per round")
    args = p.parse_args()
    dc1 = start_server("--datacenter", "dc1")
    dc2 = None
    try:
        dc2 = start_server(
            "--datacenter", "dc2", "--primary-datacenter", "dc1", "--join-wan", dc1.http
        )
        until_states(dc2, names_all("dc1", "dc2"))
        writer = _conn(dc1.http)
        state = ["allow"]
        _write(writer, "allow")
        local, remote = Watcher(dc1), Watcher(dc2)
        remote.wait_for("allow")
        remote_ms: list[float] = []
        local_med: list[float] = []
        remote_med: list[float] = []
        for n in range(args.rounds):
            sides = [("local", local), ("remote", remote)]
            if n % 2:
                sides.reverse()
            for name, watcher in sides:
                got = [_measure(writer, watcher, state) for _ in range(args.writes)]
                # the other side must see the last flip too before it is measured
                other = remote if watcher is local else local
                other.wait_for(state[0])
                (local_med if name == "local" else remote_med).append(statistics.median(got))
                if name == "remote":
                    remote_ms.extend(got)
        local.stop = remote.stop = True
        p99 = statistics.quantiles(remote_ms, n=100)[98] if len(remote_ms) >= 2 else remote_ms[0]
        print(f"local:  median per round {report.spread(local_med, '.2f', ' ms')}")
        print(f"remote: median per round {report.spread(remote_med, '.2f', ' ms')}")
        added = [far - near for far, near in zip(remote_med, local_med, strict=True)]
        print(f"added by replication: median per round {report.spread(added, '.2f', ' ms')}")
        report.row(
            "intention in primary -> visible in secondary, p99",
            f"<= {GOAL_MS:.0f} ms",
            f"{p99:.1f} ms (median {statistics.median(remote_ms):.1f} ms; "
            f"local {statistics.median(local_med):.1f} ms)",
            p99 <= GOAL_MS,
        )
        return 0
    finally:
        if dc2 is not None:
            dc2.stop()
        dc1.stop()


if __name__ == "__main__":
    sys.exit(main())
