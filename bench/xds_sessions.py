"""xDS sessions' own work for one write, in one process: no gRPC, no sockets.

``bench/xds_convergence.py`` measures a write reaching N real gRPC clients; on this machine
most of the server's CPU there is gRPC's per-message machinery, which hides changes to the
sessions' Python work. This bench registers N sidecars in a real in-memory store, opens N
Delta sessions on one ``Hub`` (subscribed to every type, as the clients are), then makes
``--writes`` wildcard intention writes (deny, allow...) and measures the CPU time of every
session's refresh (the shared snapshot, ``collect_inputs``, the translation key and the
shared translation) and its diff, each response serialised as gRPC would. No goal of its own:
it shows where ``xds_convergence``'s time is not.

Run: .venv/bin/python bench/xds_sessions.py [N ...] [--shape alike|distinct|both]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from bench.report import spread
from loom.control.state import ServerSettings, State
from loom.store import Store
from loom.xds.hub import Hub
from loom.xds.server import DeltaSession
from loom.xds.translate.names import ORDER


async def _no_requests() -> AsyncIterator[object]:
    return
    yield  # an async generator that ends at once


async def run_n(n: int, distinct: bool, writes: int) -> list[float]:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        for i in range(n):
            await state.catalog.agent_register({
                "Name": f"svc-{i}", "Port": 8000 + i if distinct else 8000,
                "Address": f"10.1.{i // 250}.{i % 250 + 1}",
                "Connect": {"SidecarService": {"Port": 20000, "Proxy": {"Upstreams": [
                    {"DestinationName": "svc-0", "LocalBindPort": 9000}]}}}})  # fmt: skip
        hub = Hub(state)
        sessions = []
        for i in range(n):
            session = DeltaSession(hub, _no_requests())
            node = base_pb2.Node(id=f"svc-{i}-sidecar-proxy")
            for t in ORDER:
                session._on_request(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=t))
            sessions.append(session)
        times = []
        for w in range(writes):
            action = "deny" if w % 2 == 0 else "allow"
            await state.configs.upsert_exact("*", "*", {"Action": action})
            start, sent = time.process_time(), 0
            for session in sessions:
                if session.refresh():
                    for resp in session._pushes():
                        resp.SerializeToString()
                        sent += 1
            times.append(time.process_time() - start)
            if sent < n:
                raise SystemExit(f"only {sent} responses for {n} sessions: the write changed less")
        return times
    finally:
        await state.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1000], help="N (1000)")
    parser.add_argument("--shape", choices=("alike", "distinct", "both"), default="both")
    parser.add_argument("--writes", type=int, default=7, help="writes measured (default 7)")
    args = parser.parse_args()
    shapes = ("alike", "distinct") if args.shape == "both" else (args.shape,)
    for n in args.sizes:
        for shape in shapes:
            times = asyncio.run(run_n(n, shape == "distinct", args.writes))
            mid = statistics.median(times)
            print(
                f"N={n:5d} {shape:8}: sessions' CPU for one write "
                f"{spread([t * 1000 for t in times], '.0f', ' ms').replace('rounds', 'writes')}"
                f" ({mid / n * 1e6:.0f} us a session)",
                flush=True,
            )


if __name__ == "__main__":
    main()
