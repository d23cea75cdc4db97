"""The HTTP fuzz of ``tests/api/test_http_fuzz.py`` for longer: hostile requests against every
route of a real server, counted by status, stopping at the first 5xx, traceback or refused
write that moved the store index (printed with the request that caused it).

Run: .venv/bin/python bench/fuzz_http.py [EXAMPLES]   (default 20000)
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings

from bench.report import row
from tests.support.httpfuzz import Hostile, Target, check, hostile_requests, route_paths
from tests.support.server import start_server


def main() -> int:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    server = start_server()
    target = Target(server.http)
    statuses: collections.Counter[int] = collections.Counter()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(hostile_requests(route_paths()))
    def run(req: Hostile) -> None:
        statuses[check(target, req)] += 1

    started = time.monotonic()
    try:
        run()
    finally:
        target.close()
        log = server.log_text()
        server.stop()
    took = time.monotonic() - started
    print(f"{sum(statuses.values())} requests in {took:.1f}s: " + ", ".join(
        f"{status}: {count}" for status, count in sorted(statuses.items())))  # fmt: skip
    bad = "Traceback" in log
    row("HTTP fuzz: no 5xx, no traceback", "none", f"{sum(statuses.values())} requests, "
        + ("traceback in the log" if bad else "clean"), not bad)  # fmt: skip
    print("server log: " + ("TRACEBACK FOUND" if bad else "no traceback") + f", {len(log)} bytes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
