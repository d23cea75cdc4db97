"""Time from ``loom local apply -f`` to the first successful request, seed 000's two pods (root).

Each round: a fresh local mesh (ACLs on, default allow as the seed assumes), then the clock
starts, ``loom local apply -f examples/static-server.yaml -f examples/static-client.yaml``
runs, and ``loom local exec deploy/static-client -- curl --silent http://static-server/`` is
retried until it answers ``"hello world"``; the apply alone and the whole are reported, side
by side with ``loom local run`` of the same two pods (what the demo did before), per round.

Run (root): .venv/bin/python bench/local_apply.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.mesh import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ECHO = [sys.executable, "-m", "loom", "http-echo", "-text", "hello world", "-listen", ":8080"]


def round_trip(env: dict[str, str], way: str) -> tuple[float, float]:
    def loom(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loom", "local", *args], env=env,
                              capture_output=True, text=True, timeout=180)  # fmt: skip

    up = loom("up", "--acl-default-policy", "allow")
    if up.returncode:
        raise SystemExit(up.stderr)
    try:
        started = time.monotonic()
        if way == "apply":
            done = loom("apply", "-f", str(EXAMPLES / "static-server.yaml"),
                        "-f", str(EXAMPLES / "static-client.yaml"))  # fmt: skip
            target = "deploy/static-client"
        else:
            done = loom("run", "static-server", "--port", "8080", "--", *ECHO)
            if not done.returncode:
                done = loom("run", "static-client", "--", "sleep", "infinity")
            target = "static-client"
        if done.returncode:
            raise SystemExit(done.stderr)
        applied = time.monotonic() - started
        while True:
            out = loom("exec", target, "--", "curl", "--silent", "--max-time", "2",
                       "http://static-server/")  # fmt: skip
            if out.returncode == 0 and "hello world" in out.stdout:
                return applied, time.monotonic() - started
            if time.monotonic() - started > 120:
                raise SystemExit(f"no answer: {out.returncode} {out.stdout} {out.stderr}")
    finally:
        loom("down")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, iptables)")
    state = Path(f"/run/loom-bench-apply-{os.getpid()}")
    env = {**os.environ, "LOOM_LOCAL_PREFIX": "lbapply", "LOOM_LOCAL_STATE_DIR": str(state),
           "LOOM_LOCAL_SUBNET": "10.246.0.0/16", "LOOM_LOCAL_DATA_DIR": "-",
           "LOOM_LOCAL_HTTP_ADDR": f"127.0.0.1:{free_port()}",
           "LOOM_LOCAL_GRPC_ADDR": f"127.0.0.1:{free_port()}"}  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {"apply": [], "run": []}
    for n in range(args.rounds):
        for way in ("apply", "run") if n % 2 == 0 else ("run", "apply"):
            results[way].append(round_trip(env, way))
            made, first = results[way][-1]
            print(f"round {n + 1} {way:5}: command {made:5.2f} s, first answer {first:5.2f} s")
    print(f"\n{'':6}{'command (median)':>18}{'first answer (median)':>24}")
    for way, rows in results.items():
        print(f"{way:6}{statistics.median(r[0] for r in rows):17.2f}s"
              f"{statistics.median(r[1] for r in rows):23.2f}s")  # fmt: skip
    ratio = statistics.median(r[1] for r in results["apply"]) / statistics.median(
        r[1] for r in results["run"])  # fmt: skip
    print(f"apply / run (first answer): {ratio:.2f}")


if __name__ == "__main__":
    main()
