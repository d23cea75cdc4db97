"""Admission webhook throughput and tail latency: `loom k8s webhook` vs a no-op TLS webhook.

Both servers run as separate processes on this machine with the same certificate, uvloop and
aiohttp; one client (this process, aiohttp, keep-alive, 50 concurrent requests) sends
AdmissionReviews (seed 000's static-server pod, opted in, a new uid each) to each, in one run.
The no-op answers `allowed: true` with the request's uid after parsing the JSON (and, as a
third side, also ships a canned patch of loom's size); loom plans, mutates and diffs the pod.
Loom is measured twice: the pods of one Deployment (the same template every time, as a
ReplicaSet creates them) and every pod distinct (a label differs: each is planned anew).

Rounds rotate which side goes first, so a machine that slows down slows every side alike;
each round gives loom/no-op ratios of p99 and of server CPU per review (``/proc/PID/stat``),
and the figures are the medians of those per-round ratios, with their spread.

Goal (issue 17): loom p99 <= 1.5x the no-op's, and CPU per review <= 1.5x the no-op's.

    .venv/bin/python bench/webhook_bench.py [--requests 1000] [--rounds 6] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import cpu_seconds
from bench.report import row, spread
from loom.inject import InjectSettings
from loom.k8s.admission import review
from loom.k8s.certs import generate_tls

NOOP_SERVER = r"""
import asyncio, json, ssl, sys
import uvloop
from aiohttp import web

PATCH = open(sys.argv[3]).read() if len(sys.argv) > 3 else None

async def mutate(request):
    review = json.loads(await request.read())
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True}}
    if PATCH is not None:  # a canned patch of loom's size: the cost of shipping it
        body["response"].update(patchType="JSONPatch", patch=PATCH)
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")

async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    app = web.Application()
    app.router.add_post("/mutate", mutate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    host, port = runner.addresses[0][:2]
    print(f"listening on https://{host}:{port}", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "static-server-5d8f7c-",
        "namespace": "default",
        "labels": {"app": "static-server", "pod-template-hash": "5d8f7c"},
        "annotations": {"consul.hashicorp.com/connect-inject": "true"},
    },
    "spec": {
        "containers": [
            {
                "name": "static-server",
                "image": "hashicorp/http-echo:latest",
                "args": ['-text="hello world"', "-listen=:8080"],
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "Always",
            }
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "static-server",
        "securityContext": {},
        "schedulerName": "default-scheduler",
    },
}


def review_body(serial: int = 0) -> bytes:
    """A pod CREATE review; ``serial`` makes each pod distinct (a label), so every review is
    planned from scratch."""
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["labels"]["bench-serial"] = str(serial)
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": "CREATE",
                "object": pod,
            },
        }
    ).encode()


def start(cmd: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line}{proc.communicate()[1]}")
    return proc, line.strip().split("listening on ")[1]


async def load(url: str, ca: Path, total: int, concurrency: int, distinct: bool) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca))
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    latencies: list[float] = []
    patched = 0
    bodies = [review_body(i if distinct else 0) for i in range(total + 4 * concurrency)]
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            nonlocal patched
            started = time.perf_counter()
            async with session.post(
                f"{url}/mutate", data=bodies[i], headers=headers, server_hostname="localhost"
            ) as resp:
                answer = await resp.json()
            latencies.append(time.perf_counter() - started)
            assert resp.status == 200 and answer["response"]["allowed"], answer
            if "patch" in answer["response"]:
                base64.b64decode(answer["response"]["patch"])
                patched += 1

        async def worker(indexes: range) -> None:
            for i in indexes:
                await one(i)

        # Warm up connections and code paths, then measure.
        await asyncio.gather(
            *(worker(range(w, 4 * concurrency, concurrency)) for w in range(concurrency))
        )
        latencies.clear()
        patched = 0
        started, client_cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(
            *(
                worker(range(4 * concurrency + w, 4 * concurrency + total, concurrency))
                for w in range(concurrency)
            )
        )
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
    latencies.sort()
    return {
        "rps": total / elapsed,
        # Near 1e6 / rps, the client is what limits the rate (and its queue is in the tail).
        "client_us": client_cpu / total * 1e6,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max": latencies[-1] * 1000,
        "patched": patched,
    }


P99_GOAL = 1.5
"""Issue 17: loom's p99 at most this many times the no-op's, same run."""
CPU_GOAL = 1.5
"""Issue 17: loom's server CPU per review at most this many times the no-op's."""

# side -> (server, distinct pods?)
SIDES = {
    "no-op TLS webhook": ("noop", False),
    "no-op + canned patch": ("canned", False),
    "loom, one template": ("loom", False),
    "loom, distinct pods": ("loom", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--profile", metavar="FILE", help="run loom's webhook under cProfile, stats to FILE "
        "(inflates loom's CPU: that run's figures are not the bench's)"
    )  # fmt: skip
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tls = generate_tls("localhost", "bench", datetime.datetime.now(datetime.UTC))
        cert, key, ca = Path(tmp, "tls.crt"), Path(tmp, "tls.key"), Path(tmp, "ca.crt")
        cert.write_bytes(tls.cert_pem)
        key.write_bytes(tls.key_pem)
        ca.write_bytes(tls.ca_pem)
        canned = Path(tmp, "patch.b64")
        answer = review(review_body(), InjectSettings(), lambda _: {})
        canned.write_text(answer.body["response"]["patch"])
        noop = [sys.executable, "-c", NOOP_SERVER, str(cert), str(key)]
        servers = {
            "noop": start(noop),
            "canned": start([*noop, str(canned)]),
            "loom": start([
                sys.executable, *(["-m", "cProfile", "-o", args.profile] if args.profile else []),
                "-m", "loom", "k8s", "webhook", "--tls-cert", str(cert),
                "--tls-key", str(key), "--listen", "127.0.0.1:0", "--log-level", "warning",
            ]),
        }  # fmt: skip
        sides = list(SIDES)
        try:
            for r in range(args.rounds):
                for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
                    server, distinct = SIDES[side]
                    proc, url = servers[server]
                    cpu_before = cpu_seconds(proc.pid)
                    got = uvloop.run(load(url, ca, args.requests, args.concurrency, distinct))
                    # Includes the warm-up requests (4 per connection).
                    total = args.requests + 4 * args.concurrency
                    got["cpu_us"] = (cpu_seconds(proc.pid) - cpu_before) / total * 1e6
                    results[side].append(got)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.communicate(timeout=10)
    print(
        f"{args.rounds} rounds x {args.requests} AdmissionReviews per side, {args.concurrency} "
        "concurrent, one aiohttp client, same machine; medians of the rounds; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(
        f"{'side':<22} {'reviews/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'server CPU us/review':>21} {'client CPU':>11} {'patched':>8}"
    )
    for side, runs in results.items():

        def mid(field: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r[field] for r in runs)

        print(
            f"{side:<22} {mid('rps'):>10.0f} {mid('p50'):>8.2f} {mid('p99'):>8.2f} "
            f"{mid('max'):>8.2f} {mid('cpu_us'):>21.0f} {mid('client_us'):>11.0f} "
            f"{mid('patched'):>8.0f}"
        )
    base = results["no-op TLS webhook"]
    for side, label in (("loom, one template", ""), ("loom, distinct pods", ", every pod distinct")):
        p99 = [a["p99"] / b["p99"] for a, b in zip(results[side], base, strict=True)]
        cpu = [a["cpu_us"] / b["cpu_us"] for a, b in zip(results[side], base, strict=True)]
        print(f"{side} / no-op, per round: p99 {spread(p99, '.2f', 'x')}, "
              f"CPU per review {spread(cpu, '.2f', 'x')}")  # fmt: skip
        row(f"webhook p99 vs no-op, {args.concurrency} concurrent{label}", f"<= {P99_GOAL}x",
            spread(p99, ".2f", "x"), statistics.median(p99) <= P99_GOAL)  # fmt: skip
        row(f"webhook CPU per review vs no-op{label}", f"<= {CPU_GOAL}x",
            spread(cpu, ".2f", "x") + f", {statistics.median(r['cpu_us'] for r in results[side]):.0f}"
            f" vs {statistics.median(r['cpu_us'] for r in base):.0f} us",
            statistics.median(cpu) <= CPU_GOAL)  # fmt: skip


if __name__ == "__main__":
    main()
