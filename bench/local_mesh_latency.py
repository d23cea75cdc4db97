"""Pod-to-pod through the mesh vs direct, on a local mesh (root), side by side in one run.

Three pods on the same bridge: a mesh server (its app behind its Envoy), a plain server
(transparent-proxy=false: its app answers on the pod's IP) and one client pod with transparent
proxy whose redirection excludes the plain server's address. From that pod, the mesh side is
client -> its Envoy -> mTLS -> server's Envoy -> app, dialed by the service's virtual IP, and
the direct side plain TCP to the plain server's IP. One fixed-rate client inside the client
pod's network namespace measures both sides paired (requests interleaved, each side at the full
rate: bench/fixed_rate.py), the side leading the interleave alternating by round; figures are
medians of per-round percentiles, with their spread. Also closed-loop max throughput with wrk
from inside the client pod.

``--breakdown`` also gives the client pod an explicit upstream (``connect-service-upstreams``,
a listener on the pod's loopback) and, in each round, measures it paired with direct too: the
same two sidecars and mTLS, the same inbound redirection in the server pod, but no outbound
redirection (iptables REDIRECT, original_dst, the outbound listener's filter chains) in the
client pod. The difference between the two added figures is what transparent proxying on the
client side costs. It also runs a second plain server pod and pairs it with direct the same
way (direct against direct): the spread of that "added" figure, which should be zero, is the
noise floor of the machine and the client at the time.

Run (root): .venv/bin/python bench/local_mesh_latency.py [--rate 1000] [--seconds 5] [--rounds 8] [--no-wrk] [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixed_rate import pct
from bench.procs import CpuMeter, envoys, per_request_us, sidecar_report
from bench.report import Steal, row, spread, verdict
from loom.local.mesh import LocalMesh, LocalSettings
from loom.local.netns import LocalNetSettings
from tests.support.mesh import free_port

ECHO = [sys.executable, "-m", "loom", "http-echo", "-text", "hello world", "-listen", ":8080"]
HERE = Path(__file__).resolve().parent
EXPLICIT_PORT = 9191
"""The client pod's explicit upstream listener (``--breakdown``), on its loopback."""


def in_pod(mesh: LocalMesh, pod: str, argv: list[str], timeout: float = 120) -> str:
    out = subprocess.run(mesh.exec_argv(pod, argv), capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise SystemExit(f"{' '.join(argv)} in {pod} failed: {out.stderr.strip()[-300:]}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=8, help="paired fixed-rate rounds")
    ap.add_argument("--no-wrk", action="store_true", help="skip the closed-loop wrk run")
    ap.add_argument("--breakdown", action="store_true",
                    help="also measure an explicit upstream (no client-side redirection)")  # fmt: skip
    ap.add_argument("--envoy-concurrency", type=int, default=LocalSettings.envoy_concurrency,
                    help="Envoy worker threads per sidecar (default: the local mesh's)")  # fmt: skip
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, iptables)")
    state = Path(f"/run/loom-bench-{os.getpid()}")
    state.mkdir(mode=0o755)
    mesh = LocalMesh(
        LocalSettings(
            net=LocalNetSettings(prefix="lbench", subnet="10.248.0.0/16", state_dir=state),
            http_addr=f"127.0.0.1:{free_port()}",
            grpc_addr=f"127.0.0.1:{free_port()}",
            data_dir=None,
            envoy_concurrency=args.envoy_concurrency,
        )
    )
    try:
        mesh.run("mesh-server", [8080], {}, ECHO)  # (starts the local server)
        # The local mesh is ACL default deny: the mesh pair needs its intention.
        mesh.client().put(
            "/v1/connect/intentions/exact", {"Action": "allow"},
            source="mesh-client", destination="mesh-server",
        )  # fmt: skip
        mesh.run("plain-server", [8080], {"transparent-proxy": "false"}, ECHO)
        plain_ip = mesh.record("plain-server")["ip"]  # type: ignore[index]
        # One client pod for both sides: its redirection leaves the plain server's address
        # alone, so the direct side is plain TCP to that pod, the mesh side its own Envoy.
        excluded = [f"{plain_ip}/32"]
        if args.breakdown:
            mesh.run("plain-server2", [8080], {"transparent-proxy": "false"}, ECHO)
            excluded.append(f"{mesh.record('plain-server2')['ip']}/32")  # type: ignore[index]
        client_annotations = {"transparent-proxy-exclude-outbound-cidrs": ",".join(excluded)}
        if args.breakdown:
            client_annotations["connect-service-upstreams"] = f"mesh-server:{EXPLICIT_PORT}"
        mesh.run("mesh-client", [], client_annotations, ["sleep", "3600"])
        record = mesh.client().get("/v1/catalog/service/mesh-server")[0]
        vip = record["ServiceTaggedAddresses"]["virtual"]["Address"]
        targets = {"direct": f"{plain_ip}:8080", "mesh": f"{vip}:8080"}
        explicit = f"127.0.0.1:{EXPLICIT_PORT}"
        side_runs = [("mesh", targets["mesh"])]
        if args.breakdown:
            side_runs += [("explicit", explicit), ("direct2", f"{excluded[1][:-3]}:8080")]
        for _, target in [("direct", targets["direct"]), *side_runs]:  # warm up
            in_pod(mesh, "mesh-client", ["curl", "-s", "-m", "5", f"http://{target}/"])
        # Paired rounds: one client sends to both sides at once, each at the full rate, their
        # requests interleaved (a stall of the machine lands on both alike); which side leads
        # the interleave alternates by round. Figures are medians of per-round percentiles.
        # With --breakdown each round also pairs the explicit upstream, then the second plain
        # server, with direct (runs of their own: more targets in one client would be more
        # req/s), the order of the runs alternating too.
        per_round: dict[str, list[tuple[float, float]]] = {"direct": [], "mesh": []}
        # The two pods' Envoys: in a mesh run, what they use is the mesh side's alone.
        meter = CpuMeter({side: envoys(netns=mesh.record(f"mesh-{side}")["netns"])  # type: ignore[index]
                          for side in ("client", "server")})  # fmt: skip
        sidecar_cpu: list[dict[str, tuple[float, float]]] = []
        mesh_requests: list[int] = []
        rates: dict[str, list[float]] = {"direct": [], "mesh": []}
        beside: dict[str, list[float]] = {}  # "explicit" -> its added p50 / p99 per round
        steals: list[float] = []  # the host's share of the CPU time in each mesh run
        for r in range(args.rounds):
            for side, target in side_runs if r % 2 == 0 else list(reversed(side_runs)):
                pair = [("direct", targets["direct"]), (side, target)]
                names = pair if r % 2 == 0 else list(reversed(pair))
                argv = [sys.executable, str(HERE / "fixed_rate.py"), "--rate", str(args.rate),
                        "--seconds", str(args.seconds)]  # fmt: skip
                for _, host_port in names:
                    argv += ["--target", host_port]
                stolen = Steal()
                meter.start()
                results = json.loads(in_pod(mesh, "mesh-client", argv))
                used = meter.stop()
                if side == "mesh":
                    steals.append(stolen.pct())
                    sidecar_cpu.append(used)
                figs = {}
                for (name, _), result in zip(names, results, strict=True):
                    figs[name] = (pct(result["latencies"], 50), pct(result["latencies"], 99))
                    if result["errors"]:
                        print(f"  {name}: {result['errors']} failed requests")
                    if side == "mesh":
                        per_round[name].append(figs[name])
                        rates[name].append(result["rate"])
                        if name == "mesh":
                            mesh_requests.append(result["count"])
                if side != "mesh":
                    beside.setdefault(f"{side}50", []).append(figs[side][0] - figs["direct"][0])
                    beside.setdefault(f"{side}99", []).append(figs[side][1] - figs["direct"][1])
        added50 = [m[0] - d[0] for d, m in zip(per_round["direct"], per_round["mesh"], strict=True)]
        added99 = [m[1] - d[1] for d, m in zip(per_round["direct"], per_round["mesh"], strict=True)]
        print(f"pod to pod, fixed rate {args.rate} req/s to each side, paired, keep-alive, "
              f"16 warm connections each, {args.rounds} rounds of {args.seconds:g} s:")  # fmt: skip
        for name in ("direct", "mesh"):
            print(f"  {name:6}: p50 {spread([x[0] for x in per_round[name]], '.3f', ' ms')}  "
                  f"p99 {spread([x[1] for x in per_round[name]], '.3f', ' ms')}  "
                  f"({statistics.mean(rates[name]):.0f} req/s)")  # fmt: skip
        print(f"  added by the mesh: p50 {spread(added50, '+.3f', ' ms')}, "
              f"p99 {spread(added99, '+.3f', ' ms')}")  # fmt: skip
        if args.breakdown:
            print(f"  added by an explicit upstream (same sidecars and mTLS, no client-side "
                  f"redirection), paired with direct in runs of its own: "
                  f"p50 {spread(beside['explicit50'], '+.3f', ' ms')}, "
                  f"p99 {spread(beside['explicit99'], '+.3f', ' ms')}")  # fmt: skip
            print(f"  added by nothing (direct vs a second plain server: the noise floor): "
                  f"p50 {spread(beside['direct250'], '+.3f', ' ms')}, "
                  f"p99 {spread(beside['direct299'], '+.3f', ' ms')}")  # fmt: skip
        print(f"  load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print("  per round, added p99 / host steal: " + ", ".join(
            f"{a:+.2f} ms / {s:.1f}%" for a, s in zip(added99, steals, strict=True)))  # fmt: skip
        figure, met = verdict(added99, steals, "+.3f", " ms",
                              lambda vs: statistics.median(vs) <= 0.5)
        row(f"added p99 pod to pod, {args.rate} req/s", "<= +0.5 ms", figure, met)
        sidecar_report(per_request_us(sidecar_cpu, mesh_requests), f"pod to pod, {args.rate} req/s")
        if shutil.which("wrk") and not args.no_wrk:
            got = {}
            for name, target in targets.items():
                wrk = ["wrk", "-t2", "-c16", "-d5s", f"http://{target}/"]
                out = in_pod(mesh, "mesh-client", wrk)
                got[name] = float(next(line.split()[1] for line in out.splitlines()
                                       if line.startswith("Requests/sec:")))  # fmt: skip
            print(f"  max throughput (wrk -t2 -c16): direct {got['direct']:,.0f} req/s, "
                  f"mesh {got['mesh']:,.0f} req/s, ratio {got['mesh'] / got['direct']:.2f}")
    finally:
        mesh.down()
        time.sleep(0.1)
        if state.exists() and not any(state.iterdir()):
            state.rmdir()


if __name__ == "__main__":
    main()
