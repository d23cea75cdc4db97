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

Run (root): .venv/bin/python bench/local_mesh_latency.py [--rate 1000] [--seconds 5] [--rounds 8] [--no-wrk]
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
from bench.report import row, spread
from loom.local.mesh import LocalMesh, LocalSettings
from loom.local.netns import LocalNetSettings
from tests.support.mesh import free_port

ECHO = [sys.executable, "-m", "loom", "http-echo", "-text", "hello world", "-listen", ":8080"]
HERE = Path(__file__).resolve().parent


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
        mesh.run("mesh-client", [], {"transparent-proxy-exclude-outbound-cidrs": f"{plain_ip}/32"},
                 ["sleep", "3600"])  # fmt: skip
        record = mesh.client().get("/v1/catalog/service/mesh-server")[0]
        vip = record["ServiceTaggedAddresses"]["virtual"]["Address"]
        targets = {"direct": plain_ip, "mesh": vip}
        for host in targets.values():  # warm up
            in_pod(mesh, "mesh-client", ["curl", "-s", "-m", "5", f"http://{host}:8080/"])
        # Paired rounds: one client sends to both sides at once, each at the full rate, their
        # requests interleaved (a stall of the machine lands on both alike); which side leads
        # the interleave alternates by round. Figures are medians of per-round percentiles.
        per_round: dict[str, list[tuple[float, float]]] = {"direct": [], "mesh": []}
        rates: dict[str, list[float]] = {"direct": [], "mesh": []}
        order = list(targets)
        for r in range(args.rounds):
            names = order if r % 2 == 0 else list(reversed(order))
            argv = [sys.executable, str(HERE / "fixed_rate.py"), "--rate", str(args.rate),
                    "--seconds", str(args.seconds)]  # fmt: skip
            for name in names:
                argv += ["--target", f"{targets[name]}:8080"]
            results = json.loads(in_pod(mesh, "mesh-client", argv))
            for name, result in zip(names, results, strict=True):
                per_round[name].append((pct(result["latencies"], 50), pct(result["latencies"], 99)))
                rates[name].append(result["rate"])
                if result["errors"]:
                    print(f"  {name}: {result['errors']} failed requests")
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
        row(f"added p99 pod to pod, {args.rate} req/s", "<= +0.5 ms",
            spread(added99, "+.3f", " ms"), statistics.median(added99) <= 0.5)  # fmt: skip
        if shutil.which("wrk") and not args.no_wrk:
            got = {}
            for name, host in targets.items():
                wrk = ["wrk", "-t2", "-c16", "-d5s", f"http://{host}:8080/"]
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
