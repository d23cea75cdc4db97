"""``make bench``: every bench in bench/ with short settings, then ONE table (issue 17, part 6).

Each bench runs as its own process (the settings below keep the whole run to a few minutes)
with ``LOOM_BENCH_REPORT`` naming a JSON-lines file; the rows it records through
``bench/report.py`` (measure, goal, figure, met?) are collected into one table, printed with
the machine's load (``uptime``) before and after and the share of the CPU time the hypervisor
took (steal, per bench and over the run), since on a shared machine a figure means little
without them. A bench whose needs are missing (root, Envoy, dnsperf, dnsmasq, etcd)
is not run: its measures appear as skipped, with the reason. A bench that fails or times out
appears as such, with the last line of its output; its full output is in ``--logs``.

Run: .venv/bin/python bench/run_all.py [--only NAME ...] [--logs DIR] [--timeout S] [--src DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import QUIET_STEAL_PCT, REPORT_ENV, Steal  # noqa: E402


def _envoy() -> str | None:
    try:
        from loom.dataplane.envoy import envoy_binary

        envoy_binary()
    except Exception as exc:
        return f"needs Envoy ({exc})"
    return None


def _root() -> str | None:
    return None if os.geteuid() == 0 else "needs root (network namespaces, iptables)"


def _tool(name: str, package: str) -> Callable[[], str | None]:
    def check() -> str | None:
        found = shutil.which(name) or Path(f"/usr/sbin/{name}").exists()
        return None if found else f"needs {name} (apt-get install {package})"

    return check


@dataclass(frozen=True)
class Bench:
    """One bench script and how ``make bench`` runs it."""

    script: str
    """File name in bench/."""
    args: tuple[str, ...]
    """Short settings: the whole run should take minutes, not the bench's full defaults."""
    measures: tuple[tuple[str, str], ...]
    """(measure, goal) rows it reports, listed here so a skipped bench still shows them."""
    needs: tuple[Callable[[], str | None], ...] = field(default=())
    """Checks returning why the bench cannot run here, or None."""


BENCHES = (
    Bench("cli_startup.py", ("--rounds", "11", "--rss-rounds", "0"),
          (("loom --help wall time", "<= 150 ms"),)),
    Bench("dataplane_rss.py", ("--rounds", "2", "--dns"),
          (("loom dataplane RSS beside Envoy", "<= 30 MB"),
           ("loom dataplane RSS beside Envoy, serving DNS", "<= 30 MB")), (_envoy,)),
    # 3,000 reviews a side: at ~10,000 reviews/s, 1,000 made a round 0.1 s, one stall its p99.
    Bench("webhook_bench.py", ("--requests", "3000", "--rounds", "6"),
          (("webhook p99 vs no-op, 50 concurrent", "<= 1.5x"),
           ("webhook CPU per review vs no-op", "<= 1.5x"),
           ("webhook p99 vs no-op, 50 concurrent, every pod distinct", "<= 1.5x"),
           ("webhook CPU per review vs no-op, every pod distinct", "<= 1.5x"))),
    Bench("dns_bench.py", ("--duration", "3", "--latency-duration", "2", "--rounds", "4"),
          (("DNS proxy q/s vs dnsmasq, every round", ">= 1.2x"),
           ("DNS proxy p99 vs dnsmasq", "<= 1.0x")),
          (_tool("dnsperf", "dnsperf"), _tool("dnsmasq", "dnsmasq-base"))),
    Bench("mesh_latency.py", ("--flips", "100", "--rounds", "12", "--seconds", "2", "--no-wrk"),
          (("intention deny -> enforced, p99", "<= 50 ms"),
           ("intention allow after delete -> enforced, p99", "<= 50 ms"),
           ("added p99, mesh vs direct, 1000 req/s", "<= +0.5 ms"),
           ("sidecar CPU per mesh request, both sidecars, 1000 req/s", "-")), (_envoy,)),
    Bench("local_mesh_latency.py", ("--seconds", "2", "--rounds", "12", "--no-wrk"),
          (("added p99 pod to pod, 1000 req/s", "<= +0.5 ms"),
           ("sidecar CPU per mesh request, both sidecars, pod to pod, 1000 req/s", "-")),
          (_root, _envoy)),
    Bench("xds_convergence.py", ("1000", "--writes", "5", "--rounds", "3"),
          tuple((f"{what} -> N=1000 clients, {shape}", goal) for shape in ("alike", "distinct")
                for what, goal in (("xDS one write", "<= 0.3 s"),
                                   ("xDS one write to a service 1% dial", "-"),
                                   ("xDS initial config", "-"),
                                   ("xDS server memory per proxy,", "<= 50 KB")))),
    Bench("acl_overhead.py", ("--rounds", "16"),
          (("ACLs on: registrations/s cost", "<= 10%"),
           ("ACLs on: health reads/s cost", "<= 10%"))),
    Bench("catalog_scale.py", ("--services", "2000", "--tags", "20000", "--store", "memory"),
          (("catalog (memory): registration rate last/first, 2,000 services", ">= 0.8x"),
           ("catalog (memory): server RSS, 2,000 services", "< 300 MB at 10,000"),
           ("catalog (memory): GET /v1/catalog/services, 20,000 tags", "< 100 ms"))),
    Bench("control_plane.py", (),
          (("leaf certificates signed in process", ">= 50/s"),
           ("blocking-query wake-up after a write, p99 (memory)", "-"),
           ("registrations/s, memory / sqlite", "-"))),
    Bench("leaf_sign.py", ("--rounds", "3", "--count", "1000", "--conns", "8"),
          (("CSR signings/s through the API", ">= 2000/s"),)),
    Bench("store_backends.py", ("--count", "150"),
          (("registrations/s, memory / sqlite / etcd", "-"),
           ("etcd: write through A visible on B, median", "-")), (_tool("etcd", "etcd-server"),)),
    Bench("kv.py", (),
          (("KV put/s vs registrations/s", ">= 1.0x"), ("KV get/s", ">= 1,000/s"),
           ("KV blocking-query wake-up, p50", "<= 5 ms"),
           ("health watchers woken by KV writes", "0"))),
    Bench("replication.py", ("--rounds", "4", "--writes", "20"),
          (("intention in primary -> visible in secondary, p99", "<= 200 ms"),)),
    Bench("xdc_latency.py", ("--rate", "500", "--seconds", "2", "--rounds", "4", "--flips", "20"),
          (("added p50, dc1 -> dc2 through both gateways vs inside dc1, 500 req/s", "-"),
           ("added p99, dc1 -> dc2 through both gateways vs inside dc1, 500 req/s", "-"),
           ("intention deny in primary -> enforced in dc2's sidecar, p99", "<= 200 ms"),
           ("intention allow after delete in primary -> enforced in dc2's sidecar, p99",
            "<= 200 ms")), (_envoy,)),
    Bench("fuzz_http.py", ("300",),
          (("HTTP fuzz: no 5xx, no traceback", "none"),)),
)  # fmt: skip


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return Path("/proc/loadavg").read_text().strip()


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the bench's process group, then SIGKILL what is left after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is empty: nothing left to end
        if _group_gone(proc, grace):
            return


def _group_gone(proc: subprocess.Popen[bytes], grace: float) -> bool:
    """Wait up to ``grace`` seconds for the group to empty (reaping its leader)."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.1)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_one(bench: Bench, logs: Path, timeout: float, src: Path) -> list[dict[str, str]]:
    """Run one bench (or skip it) and return its rows."""
    for need in bench.needs:
        reason = need()
        if reason:
            return [{"measure": m, "goal": g, "figure": f"skipped: {reason}", "met": "skip"}
                    for m, g in bench.measures]  # fmt: skip
    report = logs / f"{bench.script}.jsonl"
    report.unlink(missing_ok=True)
    log = logs / f"{bench.script}.log"
    path = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, REPORT_ENV: str(report), "PYTHONPATH": path}
    argv = [sys.executable, str(ROOT / "bench" / bench.script), *bench.args]
    print(f"== {bench.script} {' '.join(bench.args)}", flush=True)
    started, stolen = time.monotonic(), Steal()
    failure = ""
    with log.open("w") as out:
        # Its own process group: whatever the bench started (servers, Envoy, etcd) is ended
        # with it, even when it is killed for its timeout or dies without cleaning up.
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout)
            if rc:
                failure = f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout:.0f} s"
        finally:
            _end_group(proc)
    took = time.monotonic() - started
    rows = _rows(report)
    if failure:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = tail[-1][:120] if tail else "no output"
        rows.append({"measure": bench.script, "goal": "-", "figure": f"{failure}: {last}",
                     "met": "error"})  # fmt: skip
    elif not rows:
        rows.append({"measure": bench.script, "goal": "-", "figure": "reported no rows",
                     "met": "error"})  # fmt: skip
    print(f"   {took:.0f} s, {len(rows)} rows, host steal {stolen.pct():.1f}% (log: {log})",
          flush=True)  # fmt: skip
    return rows


def table(rows: list[dict[str, str]]) -> str:
    heads = ("measure", "goal", "figure", "met?")
    cells = [(r["measure"], r["goal"], r["figure"], r["met"]) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="bench names (e.g. webhook_bench)")
    parser.add_argument("--logs", type=Path, help="keep each bench's output here")
    parser.add_argument("--timeout", type=float, default=300.0, help="per bench, seconds")
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="the Loom source measured (default: this checkout's; another "
                        "checkout's src/ gives its figures with these benches)")  # fmt: skip
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or Path(b.script).stem in args.only]
    unknown = set(args.only) - {Path(b.script).stem for b in BENCHES}
    if unknown:
        parser.error(f"unknown bench: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        before, stolen = _uptime(), Steal()
        rows = [row for bench in chosen for row in run_one(bench, logs, args.timeout, args.src.resolve())]
        after = _uptime()
    print()
    print(table(rows))
    print()
    print(f"load before: {before}")
    print(f"load after:  {after}")
    print(f"host steal:  {stolen.pct():.1f}% of the CPU time over the run (latency rows judge "
          f"the rounds under {QUIET_STEAL_PCT:g}% when at least half are: bench/report.py)")
    print(f"source measured: {args.src.resolve()}")
    return 1 if any(r["met"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
