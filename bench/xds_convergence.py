"""xDS convergence: N light ADS clients (a small gRPC client each, not N Envoys).

Registers N services with sidecars, connects one Delta ADS stream per sidecar (25 streams to a
gRPC channel, ``--streams-per-channel``), waits until
every client has its initial configuration (and ACKed it), then makes ONE write that changes
every proxy's public listener (a wildcard intention, deny then allow...) and measures the time
until all N clients have received it; ``--writes`` such writes, one after the other, give the
median and spread. Also reports the server's RSS growth per connected proxy (once every
client has its configuration, and after the writes, which leave the caches fuller).

Goal (issue 17): <= 0.3 s at N = 1,000 and <= 1.5 s at N = 5,000 (Consul's default cap is
250 proxy updates/s), and <= 50 KB of server memory per connected proxy.

Two kinds of write (``--scenario``): ``every`` changes every proxy (the wildcard intention
above: all N must be told) and ``rare`` changes the endpoints of a service only 1% of the
proxies dial (a sidecar of ``rare`` registered, then deregistered...): the time until those
1% have the new endpoints, and the other 99% must be sent nothing. The server skips streams a
write cannot touch (``loom.xds.deps``), which only the second kind can show.

``--rounds R`` repeats the whole run R times, alternating sizes (and ``--server-src``
variants: ``LABEL=DIR`` runs the server from the ``loom`` package in DIR, to compare two
versions in the same rounds); each figure is then the median of the per-round medians, with
their spread.

Services come in two shapes (``--shape``): alike (the same ports, rules and upstream: their
proxies share one translation, as the sidecars of one service's instances do) and distinct
(each its own app port: every proxy is translated on its own).

Run: .venv/bin/python bench/xds_convergence.py [N ...] [--shape both] [--rounds R]
     [--scenario every|rare|both] [--server-src before=/tmp/old/src --server-src after=src]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

from bench.procs import cpu_seconds
from bench.report import row, spread
from loom.xds.translate.names import ORDER, TYPE_CLUSTER, TYPE_ENDPOINTS, TYPE_LISTENER
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
        self.endpoint_updates = 0
        self.want = 2  # the initial listeners, then the first write's
        self.watch = TYPE_LISTENER
        """The type whose ``want``-th response sets ``changed``."""
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self.seen: set[str] = set()
        self.retries = 0
        self.eds: list[str] | None = None
        """The cluster names whose endpoints it subscribed to, once it has."""

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
            self.eds = None
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
            if resp.type_url == TYPE_CLUSTER and self.eds is None:
                # As Envoy does: ask for the endpoints of the clusters it was sent.
                self.eds = [r.name for r in resp.resources]
                self.out.put_nowait(discovery_pb2.DeltaDiscoveryRequest(
                    type_url=TYPE_ENDPOINTS, resource_names_subscribe=self.eds))  # fmt: skip
            elif resp.type_url == TYPE_ENDPOINTS and self.eds is not None:
                self.seen.add(resp.type_url)  # the answer to that subscription (or later)
            if resp.type_url != TYPE_ENDPOINTS:
                self.seen.add(resp.type_url)
            if resp.type_url == TYPE_LISTENER:
                self.listener_updates += 1
            elif resp.type_url == TYPE_ENDPOINTS:
                self.endpoint_updates += 1
            if resp.type_url == self.watch and self.updates(self.watch) >= self.want:
                self.changed.set()
            if len(self.seen) == len(ORDER):
                self.ready.set()

    def updates(self, type_url: str) -> int:
        return self.listener_updates if type_url == TYPE_LISTENER else self.endpoint_updates


RARE_EVERY = 100
"""In the ``rare`` scenario, every 100th proxy (1%) also dials ``rare``."""
BENCH_NODE = "bench-rare"


async def _timed_writes(
    pid: int, clients: list[Client], watch: str, writes: int, write: Any
) -> dict[str, list[float]]:
    """``writes`` writes (``write(w)``), each timed until every one of ``clients`` has a new
    response of type ``watch``."""
    out: dict[str, list[float]] = {"converge_s": [], "server_cpu_s": [], "client_cpu_s": []}
    for w in range(writes):
        for c in clients:
            c.watch, c.want, c.changed = watch, c.updates(watch) + 1, asyncio.Event()
        start, used, mine = time.perf_counter(), cpu_seconds(pid), time.process_time()
        await asyncio.to_thread(write, w)
        await asyncio.wait_for(asyncio.gather(*(c.changed.wait() for c in clients)), 120)
        out["converge_s"].append(time.perf_counter() - start)
        out["server_cpu_s"].append(cpu_seconds(pid) - used)
        out["client_cpu_s"].append(time.process_time() - mine)
    return out


async def run_n(
    n: int,
    distinct: bool,
    per_channel: int,
    writes: int,
    profile: str = "",
    scenarios: tuple[str, ...] = ("every",),
) -> dict[str, Any]:
    if profile:  # tests/support/profiled.py: cProfile in the server, switched by signals
        os.environ["LOOM_SERVER_PROFILE"] = profile
    server = start_server("--default-intention-policy", "allow")
    pid = server.proc.pid  # type: ignore[union-attr]
    rare = "rare" in scenarios
    try:
        if rare:  # the service 1% dial: an instance whose sidecars the writes add and remove
            put(server.http, "/v1/catalog/register", {
                "Node": BENCH_NODE, "Address": "10.2.0.1",
                "Service": {"ID": "rare-1", "Service": "rare", "Port": 7000}})  # fmt: skip
        for i in range(n):
            upstreams = [{"DestinationName": "svc-0", "LocalBindPort": 9000}]
            if rare and i % RARE_EVERY == 0:
                upstreams.append({"DestinationName": "rare", "LocalBindPort": 9001})
            put(server.http, "/v1/agent/service/register", {
                "Name": f"svc-{i}", "Port": 8000 + i if distinct else 8000, "Address": f"10.1.{i // 250}.{i % 250 + 1}",
                "Connect": {"SidecarService": {"Port": 20000, "Proxy": {"Upstreams": upstreams}}}})  # fmt: skip
        base_rss = rss_mb(pid)
        # Several streams share a channel (one TCP connection, HTTP/2 streams): thousands of
        # simultaneous connects from one process overflow the accept backlog, and the
        # dropped ones back off for minutes; the server's per-stream work is the same.
        channels = [grpc.aio.insecure_channel(server.grpc)
                    for _ in range((n + per_channel - 1) // per_channel)]  # fmt: skip
        clients = [Client(channels[i // per_channel], f"svc-{i}-sidecar-proxy") for i in range(n)]
        if profile:
            os.kill(pid, signal.SIGUSR1)
        tasks: list[asyncio.Task[None]] = []

        async def connect(k: int) -> None:
            # Streams opened on a channel still connecting are refused by grpc's core
            # ("Internal error from Core") by the thousand, and opened again: a channel's
            # streams start once it is connected, as an Envoy's start once it has dialled.
            await channels[k].channel_ready()
            tasks.extend(asyncio.create_task(c.run())
                         for c in clients[k * per_channel:(k + 1) * per_channel])  # fmt: skip

        start, used = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*(connect(k) for k in range(len(channels))))
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 300)
        initial, initial_cpu = time.perf_counter() - start, cpu_seconds(pid) - used
        if profile:  # the initial configuration's profile apart from the writes'
            os.kill(pid, signal.SIGUSR2)
            await asyncio.sleep(1)
            os.replace(profile, f"{profile}.initial")
            os.replace(f"{profile}.gc.json", f"{profile}.initial.gc.json")
        await asyncio.sleep(1)
        connected_rss = rss_mb(pid)
        if profile:
            os.kill(pid, signal.SIGUSR1)
        result: dict[str, Any] = {
            "initial_s": initial,
            "initial_cpu_s": initial_cpu,
            "rss_per_proxy_mb": (connected_rss - base_rss) / n,
            "base_rss_mb": base_rss,
        }

        def intention(w: int) -> None:  # deny, allow, deny...: each changes every listener
            put(server.http, "/v1/connect/intentions/exact?source=*&destination=*",
                {"Action": "deny" if w % 2 == 0 else "allow"})  # fmt: skip

        def rare_sidecar(w: int) -> None:  # registered, deregistered...: rare's endpoints
            if w % 2 == 0:
                put(server.http, "/v1/catalog/register", {
                    "Node": BENCH_NODE, "Address": "10.2.0.1",
                    "Service": {"ID": "rare-1-sidecar", "Service": "rare-sidecar-proxy",
                                "Kind": "connect-proxy", "Port": 21000,
                                "Proxy": {"DestinationServiceName": "rare",
                                          "DestinationServiceID": "rare-1"}}})  # fmt: skip
            else:
                put(server.http, "/v1/catalog/deregister",
                    {"Node": BENCH_NODE, "ServiceID": "rare-1-sidecar"})  # fmt: skip

        if "every" in scenarios:
            result["every"] = await _timed_writes(pid, clients, TYPE_LISTENER, writes, intention)
        if rare:
            users = clients[::RARE_EVERY]
            others = clients[1::RARE_EVERY][:5] + clients[-5:]
            before = [(c.listener_updates, c.endpoint_updates) for c in others]
            result["rare"] = await _timed_writes(pid, users, TYPE_ENDPOINTS, writes, rare_sidecar)
            await asyncio.sleep(0.5)  # a stray response to the 99% would have arrived by now
            after = [(c.listener_updates, c.endpoint_updates) for c in others]
            if before != after:
                raise SystemExit("the rare write reached proxies that do not dial rare")
        result["rss_after_writes_per_proxy_mb"] = (rss_mb(pid) - base_rss) / n
        if profile:
            os.kill(pid, signal.SIGUSR2)
            await asyncio.sleep(1)  # the server writes the stats
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
        result["retries"] = sum(c.retries for c in clients)
        return result
    finally:
        server.stop()


def _show(
    n: int, shape: str, label: str, runs: list[dict[str, Any]], scenarios: tuple[str, ...]
) -> None:
    """Print one size, shape and server variant: per write when there was one round, else
    the median of the per-round medians."""
    tag = f" [{label}]" if label else ""
    what = f"N={n} clients, {shape}{tag}"
    per = "writes" if len(runs) == 1 else "rounds"

    def figures(key: str, scenario: str) -> list[float]:
        if len(runs) == 1:
            return list(runs[0][scenario][key])
        return [statistics.median(r[scenario][key]) for r in runs]

    for scenario in scenarios:
        conv = figures("converge_s", scenario)
        cpu = figures("server_cpu_s", scenario)
        client = figures("client_cpu_s", scenario)
        mid = statistics.median(conv)
        reached = n if scenario == "every" else len(range(0, n, RARE_EVERY))
        print(
            f"N={n:5d} {shape:8}{tag} {scenario:5}: one write -> all {reached} concerned "
            f"updated in {spread([x * 1000 for x in conv], '.0f', ' ms').replace('rounds', per)}"
            f" (server CPU {spread([x * 1000 for x in cpu], '.0f', ' ms').replace('rounds', per)}"
            f", clients' CPU {statistics.median(client) * 1000:.0f} ms"
            f"; {reached / mid:,.0f} proxy updates/s)",
            flush=True,
        )
        goal = CONVERGE_GOAL_S.get(n) if scenario == "every" else None
        label_s = "xDS one write" if scenario == "every" else "xDS one write to a service 1% dial"
        row(f"{label_s} -> N={n} clients, {shape}{tag}",
            "-" if goal is None else f"<= {goal} s",
            spread(conv, ".2f", " s").replace("rounds", per),
            None if goal is None else mid <= goal)  # fmt: skip
    initial = [r["initial_s"] for r in runs]
    retries = sum(r["retries"] for r in runs)
    initial_cpu = statistics.median(r["initial_cpu_s"] for r in runs)
    note = f"server CPU {initial_cpu:.2f} s" + (
        f"; {retries} streams opened again" if retries else "")  # fmt: skip
    row(f"xDS initial config -> {what}", "-", spread(initial, ".2f", " s"), None, note)
    kb = statistics.median(r["rss_per_proxy_mb"] for r in runs) * 1024
    after = statistics.median(r["rss_after_writes_per_proxy_mb"] for r in runs) * 1024
    row(f"xDS server memory per proxy, {what}", f"<= {MEMORY_GOAL_KB:.0f} KB",
        f"{kb:.0f} KB", kb <= MEMORY_GOAL_KB, f"{after:.0f} KB after the writes")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000], help="N (100 1000)")
    parser.add_argument("--shape", choices=("alike", "distinct", "both"), default="both",
                        help="alike: every service has the same ports, rules and upstream: their "
                        "proxies share one translation; distinct: each its own app port, so no "
                        "two proxies share a translation (default: both)")  # fmt: skip
    parser.add_argument("--scenario", choices=("every", "rare", "both"), default="both",
                        help="every: a write every proxy must see; rare: a write to a service "
                        "1%% of the proxies dial (default: both)")  # fmt: skip
    parser.add_argument("--writes", type=int, default=5,
                        help="writes measured one after the other (default 5)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1,
                        help="whole runs, sizes (and --server-src) alternating; figures are "
                        "then medians of the per-round medians (default 1)")  # fmt: skip
    parser.add_argument("--server-src", action="append", default=[], metavar="LABEL=DIR",
                        help="run the server from the loom package in DIR (PYTHONPATH), "
                        "labelled LABEL; repeat to alternate versions round by round")  # fmt: skip
    parser.add_argument("--streams-per-channel", type=int, default=25,
                        help="ADS streams sharing one gRPC channel (default 25)")  # fmt: skip
    parser.add_argument("--profile", default="", metavar="OUT",
                        help="cProfile the server during the writes only; pstats to OUT "
                        "(OUT.N.shape; cProfile's overhead inflates the times)")  # fmt: skip
    args = parser.parse_args()
    # The clients are this one process, and one write makes it parse and ACK N responses at
    # once: with the collector's defaults, each burst outlives young collections and every
    # few writes costs a full one. Young collections every 100,000 allocations, as the
    # server does (``loom.server.app``), keep the client from being the bottleneck.
    gc.freeze()
    gc.set_threshold(100_000, 10, 10)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    shapes = ("alike", "distinct") if args.shape == "both" else (args.shape,)
    scenarios = ("every", "rare") if args.scenario == "both" else (args.scenario,)
    variants = [tuple(v.split("=", 1)) for v in args.server_src] or [("", "")]
    own_path = os.environ.get("PYTHONPATH", "")
    runs: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    try:
        for r in range(args.rounds):
            for n in args.sizes:
                for shape in shapes:
                    for label, src in variants:
                        os.environ["PYTHONPATH"] = str(Path(src).resolve()) if src else own_path
                        out = f"{args.profile}.{n}.{shape}" if args.profile else ""
                        got = asyncio.run(run_n(n, shape == "distinct", args.streams_per_channel,
                                                args.writes, out, scenarios))  # fmt: skip
                        runs.setdefault((n, shape, label), []).append(got)
                        mids = ", ".join(
                            f"{sc} {statistics.median(got[sc]['converge_s']) * 1000:.0f} ms"
                            for sc in scenarios
                        )
                        print(f"round {r + 1}: N={n} {shape} {label or '-'}: {mids}", flush=True)
    except KeyboardInterrupt:  # Ctrl-C: show the rounds done so far
        print("interrupted: figures of the rounds done", flush=True)
    os.environ["PYTHONPATH"] = own_path
    for (n, shape, label), got_runs in runs.items():
        _show(n, shape, label, got_runs, scenarios)


if __name__ == "__main__":
    main()
