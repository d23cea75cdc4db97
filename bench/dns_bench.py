"""dnsperf against ``loom dns-proxy`` and against dnsmasq, side by side, same mesh names.

Both serve the same names (``svc-I.ns-J.svc.cluster.local`` and ``svc-I.ns-J``): the proxy from a
``--table`` file, dnsmasq from ``host-record`` lines. Both servers start once and stay up; each
gets a one-second warm-up run (the proxy's per-table memo fills, as it would in a pod), then
every round measures, for each server:

1. throughput: ``dnsperf -l DURATION/2 -c CLIENTS -q OUTSTANDING`` twice, the sides taking
   turns A, B, B, A (B, A, A, B the next round), so a drift of the machine's other load within
   the round weighs on both alike: q/s is the queries completed over the run time of both
   halves, and CPU per query the server's own (``/proc/PID/stat``) over those queries,
   steadier than q/s under load (but at small batches it grows per query);
2. latency at a fixed rate both can sustain: ``dnsperf -Q RATE -v``, in short runs that take
   turns A, B, B, A, A, B... (``--latency-turn``, half a second by default, as many as fit
   ``--latency-duration`` per side and round), whose per-query latencies, pooled per side
   and round, give p50 / p99 / p99.9 (dnsperf 2.10 has no histogram). Short turns because on a shared machine the slow 1 % is
   not the servers' work but their waits for a CPU: at 20k q/s it comes in bursts of a few
   dozen queries (a millisecond or more off-CPU), ~10 bursts a second, and one server's p99
   over 2 s runs within a minute ranged from 0.3 to 4 ms (dnsmasq and the proxy alike, load
   3): turns of 2.5 s measured which side met the other processes' busy seconds (p99 ratios
   1.00x..3.14x in one run), turns of 0.5 s spread those seconds over both sides alike.

dnsperf runs the same way for both (no pinning: on a shared machine a pinned side cannot move
away from a busy core). The summary takes each server's median over rounds, and the ratios
proxy / dnsmasq per round (issue 17's goal: q/s >= 1.2x in every round, p99 <= 1.0x), with the
load average at each round. Loopback only.
Usage: .venv/bin/python bench/dns_bench.py [--duration 10] [--rounds 3] [...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import cpu_seconds
from bench.report import Steal, row, skipped, spread, verdict
from tests.support.mesh import free_udp_tcp_port as free_port

QPS_GOAL = 1.2
"""Issue 17: the proxy answers at least 1.2x dnsmasq's q/s, in every round."""
P99_GOAL = 1.0
"""Issue 17: and its p99 is no worse than dnsmasq's."""


@dataclass
class Result:
    qps: float = 0.0
    avg_latency_s: float = 0.0
    lost: int = 0
    rcodes: str = ""
    p50_s: float = 0.0
    p99_s: float = 0.0
    p999_s: float = 0.0
    latency_samples: int = 0
    cpu_per_query_s: float = 0.0
    """The server's own CPU time (user + system) per query of the throughput runs."""


@dataclass
class Side:
    """One server under test, and what its runs of the current round added up to."""

    label: str
    port: int
    pid: int = 0
    completed: int = 0
    run_time_s: float = 0.0
    latency_s: float = 0.0
    """Sum over throughput runs of average latency x queries completed."""
    lost: int = 0
    rcodes: list[str] | None = None
    cpu_s: float = 0.0
    samples: list[float] | None = None

    def start_round(self) -> None:
        self.completed, self.run_time_s, self.latency_s, self.lost = 0, 0.0, 0.0, 0
        self.rcodes, self.cpu_s, self.samples = [], 0.0, []


def mesh(services: int, namespaces: int) -> tuple[dict[str, object], list[tuple[str, str]]]:
    """The table JSON and (name, address) pairs of every name both servers answer."""
    table_services = []
    names: list[tuple[str, str]] = []
    for i in range(services):
        ns = f"ns-{i % namespaces}"
        vip = f"240.0.{i // 250}.{i % 250 + 1}"
        table_services.append(
            {
                "Name": f"svc-{i}",
                "Namespace": ns,
                "VirtualIPs": [vip],
                "Instances": [{"Address": f"10.1.{i // 250}.{i % 250 + 1}"}],
            }
        )
        names += [(f"svc-{i}.{ns}.svc.cluster.local", vip), (f"svc-{i}.{ns}", vip)]
    table = {
        "Index": 1,
        "Datacenter": "dc1",
        "ClusterDomain": "cluster.local",
        "Services": table_services,
        "ExternalHosts": [],
    }
    return table, names


def wait_until_answering(port: int, proc: subprocess.Popen[bytes], name: str) -> None:
    query = dns.message.make_query(name, "A")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
            continue
        if reply.answer:
            return
        raise SystemExit(f"server on port {port} does not know {name}")
    raise SystemExit(f"server on port {port} did not answer within 15 s")


@contextmanager
def running(cmd: list[str], port: int, probe: str, log: Path) -> Iterator[int]:
    """Run a server until the block ends; its pid (the process answering, no wrapper)."""
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until_answering(port, proc, probe)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dnsperf(port: int, queries: Path, *args: str) -> str:
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def throughput_run(side: Side, queries: Path, seconds: float, args: argparse.Namespace) -> None:
    """One throughput run against ``side``, added to its round."""
    cpu = cpu_seconds(side.pid)
    out = dnsperf(side.port, queries, "-l", f"{seconds:g}", "-c", str(args.clients),
                  "-q", str(args.outstanding))  # fmt: skip
    side.cpu_s += cpu_seconds(side.pid) - cpu
    completed = int(_field(out, r"Queries completed:\s+(\d+)"))
    side.completed += completed
    side.run_time_s += float(_field(out, r"Run time \(s\):\s+([\d.]+)"))
    side.latency_s += float(_field(out, r"Average Latency \(s\):\s+([\d.]+)")) * completed
    side.lost += int(_field(out, r"Queries lost:\s+(\d+)"))
    assert side.rcodes is not None
    side.rcodes.append(_field(out, r"Response codes:\s+(.+)"))


def latency_run(side: Side, queries: Path, seconds: float, args: argparse.Namespace) -> None:
    """One fixed-rate run against ``side``: its per-query latencies join the round's."""
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(side.port), "-d", str(queries),
           "-l", f"{seconds:g}", "-Q", str(args.latency_rate), "-c", str(args.clients), "-v"]  # fmt: skip
    # To a file, not a pipe: the bench itself stays asleep while the clock runs, instead of
    # reading ~1 MB/s of per-query lines beside the two it measures.
    out = queries.with_name("latency.out")
    with out.open("wb") as sink:
        subprocess.run(cmd, stdout=sink, stderr=subprocess.PIPE, check=True)
    verbose = out.read_text()
    assert side.samples is not None
    side.samples += [float(line.split()[-1]) for line in verbose.splitlines()
                     if line.startswith("> ")]  # fmt: skip


def round_result(side: Side) -> Result:
    result = Result(lost=side.lost, rcodes="; ".join(side.rcodes or ()))
    if side.run_time_s:
        result.qps = side.completed / side.run_time_s
    if side.completed:
        result.avg_latency_s = side.latency_s / side.completed
        result.cpu_per_query_s = side.cpu_s / side.completed
    samples = sorted(side.samples or ())
    if samples:
        result.latency_samples = len(samples)
        result.p50_s = statistics.median(samples)
        result.p99_s = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        result.p999_s = samples[min(len(samples) - 1, int(len(samples) * 0.999))]
    return result


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"dnsperf output lacks {pattern!r}:\n{text}")
    return match.group(1).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="throughput per side and round (two runs of half), s")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    parser.add_argument("--latency-rate", type=int, default=20000, help="q/s of the p99 run")
    parser.add_argument("--latency-duration", type=float, default=5.0,
                        help="p99 runs per side and round, all turns together, s")
    parser.add_argument("--latency-turn", type=float, default=0.5,
                        help="one p99 run, sides taking turns, s")
    parser.add_argument("--services", type=int, default=500, help="mesh services")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, first side alternating")
    args = parser.parse_args()
    for tool in ("dnsperf", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            reason = f"needs {tool} (apt-get install dnsperf dnsmasq-base)"
            skipped("DNS proxy q/s vs dnsmasq, every round", ">= 1.2x", reason)
            skipped("DNS proxy p99 vs dnsmasq", "<= 1.0x", reason)
            return 0

    table, names = mesh(args.services, args.namespaces)
    results: dict[str, list[Result]] = {"loom dns-proxy": [], "dnsmasq": []}
    with tempfile.TemporaryDirectory(prefix="loom-dns-bench-") as tmp:
        work = Path(tmp)
        (work / "table.json").write_text(json.dumps(table))
        (work / "resolv.conf").write_text("search ns-0.svc.cluster.local svc.cluster.local\n")
        (work / "queries.txt").write_text("".join(f"{name} A\n" for name, _ in names))
        dnsmasq_port, proxy_port = free_port(), free_port()
        (work / "dnsmasq.conf").write_text(
            f"port={dnsmasq_port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\n"
            f"no-hosts\npid-file={work / 'dnsmasq.pid'}\n"
            + "".join(f"host-record={name},{vip}\n" for name, vip in names)
        )
        servers = {
            "loom dns-proxy": (
                [
                    sys.executable,
                    "-m",
                    "loom",
                    "dns-proxy",
                    "--table",
                    str(work / "table.json"),
                    "--listen",
                    f"127.0.0.1:{proxy_port}",
                    "--resolv-conf",
                    str(work / "resolv.conf"),
                ],
                proxy_port,
            ),
            "dnsmasq": (
                [
                    shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
                    "--no-daemon",
                    f"--conf-file={work / 'dnsmasq.conf'}",
                ],
                dnsmasq_port,
            ),
        }
        turns_per_round = max(2, round(args.latency_duration / args.latency_turn))
        piece = args.latency_duration / turns_per_round
        print(
            f"{len(names)} mesh names ({args.services} services x 2 forms), dnsperf -l "
            f"{args.duration / 2:g} x 2 -c {args.clients} -q {args.outstanding}; p99 runs at "
            f"{args.latency_rate} q/s for {piece:g} s x {turns_per_round}; {args.rounds} "
            "rounds, sides in turns A B B A / B A A B",
            flush=True,
        )
        queries = work / "queries.txt"
        sides = {label: Side(label, port) for label, (_, port) in servers.items()}
        with ExitStack() as stack:
            for label, (cmd, port) in servers.items():
                sides[label].pid = stack.enter_context(
                    running(cmd, port, names[0][0], work / f"{port}.log")
                )
            for side in sides.values():  # warm-up, not counted
                dnsperf(side.port, queries, "-l", "1", "-c", str(args.clients))
            steals: list[float] = []  # the host's share of the CPU time in each round
            for round_no in range(args.rounds):
                stolen = Steal()
                first, second = list(sides.values())[:: 1 if round_no % 2 == 0 else -1]
                turns = (first, second, second, first)
                load = os.getloadavg()[0]
                for side in turns:
                    side.start_round()
                for side in turns:
                    throughput_run(side, queries, args.duration / 2, args)
                for turn in range(turns_per_round):  # A B, B A, A B...
                    for side in turns[:2] if turn % 2 == 0 else turns[2:]:
                        latency_run(side, queries, piece, args)
                steals.append(stolen.pct())
                print(f" round {round_no + 1}, {first.label} first, load {load:.1f}, "
                      f"host steal {steals[-1]:.1f}%:")
                for side in (first, second):
                    r = round_result(side)
                    results[side.label].append(r)
                    print(
                        f"  {side.label:15} {r.qps:10.0f} q/s  avg {r.avg_latency_s * 1e3:.3f} ms"
                        f"  cpu {r.cpu_per_query_s * 1e6:.2f} us/query  p50 {r.p50_s * 1e3:.3f}"
                        f" ms  p99 {r.p99_s * 1e3:.3f} ms  p99.9 {r.p999_s * 1e3:.3f} ms  "
                        f"lost {r.lost}  [{r.rcodes}]",
                        flush=True,
                    )
    proxy, peer = (_median(results["loom dns-proxy"]), _median(results["dnsmasq"]))
    print("median of the rounds:")
    for label, r in (("loom dns-proxy", proxy), ("dnsmasq", peer)):
        print(
            f"  {label:15} {r.qps:10.0f} q/s  avg {r.avg_latency_s * 1e3:.3f} ms  "
            f"cpu {r.cpu_per_query_s * 1e6:.2f} us/query  p99 {r.p99_s * 1e3:.3f} ms"
        )
    # Rounds pair the two servers' runs (in turns), so ratios are per round.
    pairs = list(zip(results["loom dns-proxy"], results["dnsmasq"], strict=True))
    qps = [a.qps / b.qps for a, b in pairs]
    p99 = [a.p99_s / b.p99_s for a, b in pairs]
    cpu = [a.cpu_per_query_s / b.cpu_per_query_s for a, b in pairs if b.cpu_per_query_s]
    print(
        f"ratio proxy/dnsmasq per round: q/s {spread(qps, '.2f', 'x')} (goal >= 1.2x), "
        f"p99 {spread(p99, '.2f', 'x')} (goal <= 1.0x), "
        f"CPU per query {spread(cpu, '.2f', 'x')}"
    )
    figure, met = verdict(qps, steals, ".2f", "x", lambda vs: min(vs) >= QPS_GOAL)
    row("DNS proxy q/s vs dnsmasq, every round", ">= 1.2x", figure, met,
        f"{proxy.qps:,.0f} vs {peer.qps:,.0f} q/s")  # fmt: skip
    figure, met = verdict(p99, steals, ".2f", "x", lambda vs: statistics.median(vs) <= P99_GOAL)
    row("DNS proxy p99 vs dnsmasq", "<= 1.0x", figure, met,
        f"{proxy.p99_s * 1e3:.3f} vs {peer.p99_s * 1e3:.3f} ms")  # fmt: skip
    return 0


def _median(runs: list[Result]) -> Result:
    return Result(
        qps=statistics.median(r.qps for r in runs),
        avg_latency_s=statistics.median(r.avg_latency_s for r in runs),
        p99_s=statistics.median(r.p99_s for r in runs),
        cpu_per_query_s=statistics.median(r.cpu_per_query_s for r in runs),
    )


if __name__ == "__main__":
    sys.exit(main())
