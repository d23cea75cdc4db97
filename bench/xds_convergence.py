"""xDS convergence: N light ADS clients (a small gRPC client each, not N Envoys).

Registers N services with sidecars, connects one Delta ADS stream per sidecar (25 streams to a
gRPC channel, ``--streams-per-channel``), waits until
every client has its initial configuration (and ACKed it), then makes ONE write that changes
every proxy's public listener (a wildcard intention, deny then allow...) and measures the time
until all N clients have received it; ``--writes`` such writes, one after the other, give the
median and spread. Also reports the server's RSS growth per connected proxy.

Goal (issue 17): <= 0.3 s at N = 1,000 and <= 1.5 s at N = 5,000 (Consul's default cap is
250 proxy updates/s), and <= 50 KB of server memory per connected proxy.

Services come in two shapes (``--shape``): alike (the same ports, rules and upstream: their
proxies share one translation, as the sidecars of one service's instances do) and distinct
(each its own app port: every proxy is translated on its own).

Run: .venv/bin/python bench/xds_convergence.py [N ...] [--shape both]   (default: 100 1000)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from bench.report import row, spread
from loom.xds.translate.names import ORDER, TYPE_LISTENER
from tests.support.server import start_server

CONVERGE_GOAL_S = {1000: 0.3, 5000: 1.5}
"""Issue 17: one write reaches every client within this, by N."""
MEMORY_GOAL_KB = 50.0
"""Issue 17: server memory per connected proxy."""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def put(http: str, path: str, body: object) -> None:
    req = urllib.request.Request(
        f"http://{http}{path}", data=json.dumps(body).encode(), method="PUT"
    )
    urllib.request.urlopen(req, timeout=60).read()


class Client:
    """One proxy's ADS stream: subscribes to everything, ACKs every response."""

    def __init__(self, channel: grpc.aio.Channel, proxy_id: str) -> None:
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.proxy_id = proxy_id
        self.out: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
        self.listener_updates = 0
        self.want = 2  # the initial listeners, then the first write's
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self.seen: set[str] = set()
        self.retries = 0

    async def requests(self):  # type: ignore[no-untyped-def]
        node = base_pb2.Node(id=self.proxy_id)
        for t in ORDER:
            yield discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=t)
        while True:
            yield await self.out.get()

    async def run(self) -> None:
        """Stream until cancelled. A stream that fails before its first configuration is
        opened again (grpc's asyncio client refuses some of thousands of streams started at
        once with "Internal error from Core"), as Envoy reconnects; ``retries`` counts them."""
        while True:
            self.out = asyncio.Queue()
            try:
                await self._stream()
                return
            except grpc.aio.AioRpcError:
                if self.ready.is_set():
                    raise
                self.retries += 1
                await asyncio.sleep(min(1.0, 0.05 * self.retries))

    async def _stream(self) -> None:
        async for resp in self.stub.DeltaAggregatedResources(self.requests()):
            self.out.put_nowait(discovery_pb2.DeltaDiscoveryRequest(
                type_url=resp.type_url, response_nonce=resp.nonce))  # fmt: skip
            self.seen.add(resp.type_url)
            if resp.type_url == TYPE_LISTENER:
                self.listener_updates += 1
                if self.listener_updates >= self.want:
                    self.changed.set()
            if len(self.seen) == len(ORDER):
                self.ready.set()


async def run_n(
    n: int, distinct: bool, per_channel: int, writes: int, profile: str = ""
) -> dict[str, Any]:
    if profile:  # tests/support/profiled.py: cProfile in the server, switched by signals
        os.environ["LOOM_SERVER_PROFILE"] = profile
    server = start_server("--default-intention-policy", "allow")
    pid = server.proc.pid  # type: ignore[union-attr]
    try:
        for i in range(n):
            put(server.http, "/v1/agent/service/register", {
                "Name": f"svc-{i}", "Port": 8000 + i if distinct else 8000, "Address": f"10.1.{i // 250}.{i % 250 + 1}",
                "Connect": {"SidecarService": {"Port": 20000, "Proxy": {"Upstreams": [
                    {"DestinationName": "svc-0", "LocalBindPort": 9000}]}}}})  # fmt: skip
        base_rss = rss_mb(pid)
        # Several streams share a channel (one TCP connection, HTTP/2 streams): thousands of
        # simultaneous connects from one process overflow the accept backlog, and the
        # dropped ones back off for minutes; the server's per-stream work is the same.
        channels = [grpc.aio.insecure_channel(server.grpc)
                    for _ in range((n + per_channel - 1) // per_channel)]  # fmt: skip
        clients = [Client(channels[i // per_channel], f"svc-{i}-sidecar-proxy") for i in range(n)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 300)
        initial = time.perf_counter() - start
        await asyncio.sleep(1)
        connected_rss = rss_mb(pid)
        converge: list[float] = []
        cpu: list[float] = []
        client_cpu: list[float] = []
        if profile:
            os.kill(pid, signal.SIGUSR1)
        for w in range(writes):  # deny, allow, deny...: each changes every public listener
            for c in clients:
                c.want, c.changed = c.listener_updates + 1, asyncio.Event()
            start, used, mine = time.perf_counter(), cpu_s(pid), time.process_time()
            action = "deny" if w % 2 == 0 else "allow"
            await asyncio.to_thread(put, server.http,
                                    "/v1/connect/intentions/exact?source=*&destination=*",
                                    {"Action": action})  # fmt: skip
            await asyncio.wait_for(asyncio.gather(*(c.changed.wait() for c in clients)), 300)
            converge.append(time.perf_counter() - start)
            cpu.append(cpu_s(pid) - used)
            client_cpu.append(time.process_time() - mine)
        if profile:
            os.kill(pid, signal.SIGUSR2)
            await asyncio.sleep(1)  # the server writes the stats
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
        return {
            "initial_s": initial,
            "converge_s": converge,
            "server_cpu_s": cpu,
            "client_cpu_s": client_cpu,
            "rss_per_proxy_mb": (connected_rss - base_rss) / n,
            "base_rss_mb": base_rss,
            "retries": sum(c.retries for c in clients),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000], help="N (100 1000)")
    parser.add_argument("--shape", choices=("alike", "distinct", "both"), default="both",
                        help="alike: every service has the same ports, rules and upstream; "
                        "distinct: each its own app port, so no two proxies share a "
                        "translation (default: both)")  # fmt: skip
    parser.add_argument("--writes", type=int, default=5,
                        help="writes measured one after the other (default 5)")  # fmt: skip
    parser.add_argument("--streams-per-channel", type=int, default=25,
                        help="ADS streams sharing one gRPC channel (default 25)")  # fmt: skip
    parser.add_argument("--profile", default="", metavar="OUT",
                        help="cProfile the server during the writes only; pstats to OUT "
                        "(OUT.alike, OUT.distinct; cProfile's overhead inflates the times)")  # fmt: skip
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    shapes = ("alike", "distinct") if args.shape == "both" else (args.shape,)
    for n in args.sizes:
        for shape in shapes:
            out = f"{args.profile}.{n}.{shape}" if args.profile else ""
            r = asyncio.run(
                run_n(n, shape == "distinct", args.streams_per_channel, args.writes, out)
            )
            mid = statistics.median(r["converge_s"])
            print(
                f"N={n:5d} {shape:8}: initial config to all {r['initial_s']:.2f} s; one write -> "
                f"all {n} updated in {spread([x * 1000 for x in r['converge_s']], '.0f', ' ms')}"
                f" (CPU: server {spread([x * 1000 for x in r['server_cpu_s']], '.0f', ' ms')}, "
                f"the clients {statistics.median(r['client_cpu_s']) * 1000:.0f} ms; "
                f"{n / mid:,.0f} proxy updates/s, {n / mid / 250:.1f}x Consul's default "
                f"250/s); server RSS {r['rss_per_proxy_mb'] * 1024:.0f} KB per connected proxy; "
                f"{r['retries']} streams opened again",
                flush=True,
            )
            goal = CONVERGE_GOAL_S.get(n)
            what = f"N={n} clients, {shape}"
            row(f"xDS one write -> {what}", "-" if goal is None else f"<= {goal} s",
                spread(r["converge_s"], ".2f", " s").replace("rounds", "writes"),
                None if goal is None else mid <= goal)  # fmt: skip
            row(f"xDS initial config -> {what}", "-", f"{r['initial_s']:.2f} s", None,
                f"{r['retries']} streams opened again" if r["retries"] else "")  # fmt: skip
            kb = r["rss_per_proxy_mb"] * 1024
            row(f"xDS server memory per proxy, {what}", f"<= {MEMORY_GOAL_KB:.0f} KB",
                f"{kb:.0f} KB", kb <= MEMORY_GOAL_KB)  # fmt: skip


if __name__ == "__main__":
    main()
