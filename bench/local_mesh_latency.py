"""Pod-to-pod through the mesh vs direct, on a local mesh (root), side by side in one run.

Two pairs of pods on the same bridge: a mesh pair (transparent proxy: client -> its Envoy ->
mTLS -> server's Envoy -> app, dialed by the service's virtual IP) and a direct pair
(transparent-proxy=false: plain TCP to the server pod's IP). The fixed-rate client runs inside
the client pod's network namespace; rounds alternate A/B. Also closed-loop max throughput
with wrk from inside the pods.

Run (root): .venv/bin/python bench/local_mesh_latency.py [--rate 1000] [--seconds 5]
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
        )
    )
    try:
        mesh.run("mesh-server", [8080], {}, ECHO)
        mesh.run("mesh-client", [], {}, ["sleep", "3600"])
        mesh.run("plain-server", [8080], {"transparent-proxy": "false"}, ECHO)
        mesh.run("plain-client", [], {"transparent-proxy": "false"}, ["sleep", "3600"])
        vip = mesh.client().get("/v1/catalog/service/mesh-server")[0]["ServiceTaggedAddresses"]["virtual"]["Address"]
        plain_ip = mesh.record("plain-server")["ip"]  # type: ignore[index]
        targets = {"direct": ("plain-client", plain_ip), "mesh": ("mesh-client", vip)}
        for pod, host in targets.values():  # warm up
            in_pod(mesh, pod, ["curl", "-s", "-m", "5", f"http://{host}:8080/"])
        lat: dict[str, list[float]] = {"direct": [], "mesh": []}
        rates: dict[str, list[float]] = {"direct": [], "mesh": []}
        for _ in range(2):
            for name, (pod, host) in targets.items():
                raw = in_pod(mesh, pod, [sys.executable, str(HERE / "fixed_rate.py"), "--host", host,
                                         "--port", "8080", "--rate", str(args.rate),
                                         "--seconds", str(args.seconds)])  # fmt: skip
                result = json.loads(raw)
                lat[name] += result["latencies"]
                rates[name].append(result["rate"])
                if result["errors"]:
                    print(f"  {name}: {result['errors']} failed requests")
        d50, d99, m50, m99 = (pct(lat["direct"], 50), pct(lat["direct"], 99),
                              pct(lat["mesh"], 50), pct(lat["mesh"], 99))  # fmt: skip
        print(f"pod to pod, fixed rate {args.rate} req/s, keep-alive, 16 connections, "
              f"{2 * args.seconds:.0f} s per side:")  # fmt: skip
        print(f"  direct: p50 {d50:.3f} ms  p99 {d99:.3f} ms  ({statistics.mean(rates['direct']):.0f} req/s)")
        print(f"  mesh:   p50 {m50:.3f} ms  p99 {m99:.3f} ms  ({statistics.mean(rates['mesh']):.0f} req/s)")
        print(f"  added by the mesh: p50 +{m50 - d50:.3f} ms, p99 +{m99 - d99:.3f} ms")
        if shutil.which("wrk"):
            got = {}
            for name, (pod, host) in targets.items():
                out = in_pod(mesh, pod, ["wrk", "-t2", "-c16", "-d5s", f"http://{host}:8080/"])
                got[name] = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))
            print(f"  max throughput (wrk -t2 -c16): direct {got['direct']:,.0f} req/s, "
                  f"mesh {got['mesh']:,.0f} req/s, ratio {got['mesh'] / got['direct']:.2f}")
    finally:
        mesh.down()
        time.sleep(0.1)
        if state.exists() and not any(state.iterdir()):
            state.rmdir()


if __name__ == "__main__":
    main()
