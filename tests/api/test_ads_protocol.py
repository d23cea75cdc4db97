"""The ADS server's protocol behaviour with a real gRPC client (a light stand-in for Envoy):
ACKs never cause pushes, unrelated writes push nothing, Delta sends only what changed, and a
translation failure keeps the stream and the last good configuration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from loom.addrs import parse_address
from loom.control.state import ServerSettings, State
from loom.xds import hub as xds_hub
from loom.xds import server as xds_server
from loom.xds.translate import InconsistentSnapshot
from loom.xds.translate.names import ORDER, TYPE_CLUSTER, TYPE_LISTENER

PROXY = "web-sidecar-proxy"


async def _setup() -> tuple[State, str, object]:
    state = State(ServerSettings(http_addrs=(), grpc_addrs=()))
    await state.start()
    await state.catalog.agent_register({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": 21000}}})
    bound, stop = await xds_server.start_xds(state, [parse_address("127.0.0.1:0")])
    return state, bound[0], stop


class SotwClient:
    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.out: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self.responses: list[discovery_pb2.DiscoveryResponse] = []
        self.arrived = asyncio.Condition()

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        node = base_pb2.Node(id=PROXY)
        for t in ORDER:
            yield discovery_pb2.DiscoveryRequest(node=node, type_url=t)
        while True:
            yield await self.out.get()

    async def run(self) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        async for resp in stub.StreamAggregatedResources(self._requests()):
            # ACK exactly as Envoy does: echo version and nonce (queued before anyone is told).
            self.out.put_nowait(discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url, version_info=resp.version_info, response_nonce=resp.nonce))  # fmt: skip
            async with self.arrived:
                self.responses.append(resp)
                self.arrived.notify_all()

    async def received(self, count: int) -> list[discovery_pb2.DiscoveryResponse]:
        """Every response so far, once there are at least ``count``."""
        async with asyncio.timeout(10), self.arrived:
            await self.arrived.wait_for(lambda: len(self.responses) >= count)
        return list(self.responses)

    async def barrier(self, type_url: str = TYPE_LISTENER) -> discovery_pb2.DiscoveryResponse:
        """Ask again without a nonce (the server always answers that) and wait for the answer.

        The stream is ordered: the server handles every ACK sent before this request, and
        sends whatever they or earlier changes call for, before it answers. So the answer
        lands at a known position, and anything unasked for shows up as an extra response.
        """
        expected = len(self.responses) + 1
        self.out.put_nowait(discovery_pb2.DiscoveryRequest(type_url=type_url))
        return (await self.received(expected))[-1]


async def _stop(task: asyncio.Task[None], client: SotwClient) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.channel.close()


def _kinds(responses: list[discovery_pb2.DiscoveryResponse]) -> list[tuple[str, str]]:
    return [(r.type_url.rsplit(".", 1)[-1], r.version_info) for r in responses]


async def test_acks_never_cause_a_push_and_unrelated_writes_push_nothing() -> None:
    state, target, stop = await _setup()
    client = SotwClient(target)
    task = asyncio.create_task(client.run())
    try:
        initial = await client.received(len(ORDER))
        assert [r.type_url for r in initial] == list(ORDER)  # one answer per type
        v1 = initial[-1].version_info
        # Four ACKs went out before this barrier: had any been answered, it would sit here.
        answer = await client.barrier()
        assert (answer.type_url, answer.version_info) == (TYPE_LISTENER, v1)
        # A write that does not touch this proxy's inputs, then one that does (a deny
        # intention to web): the first response after both is the new listener version.
        await state.catalog.agent_register({"Name": "unrelated", "Port": 1})
        await state.configs.upsert_exact("api", "web", {"Action": "deny"})
        pushed = (await client.received(len(ORDER) + 2))[-1]
        assert pushed.type_url == TYPE_LISTENER and pushed.version_info != v1
        # ...and the only one: the next barrier's answer follows it directly.
        answer = await client.barrier(TYPE_CLUSTER)
        assert _kinds(client.responses[len(ORDER) :]) == [
            ("Listener", v1), ("Listener", pushed.version_info), ("Cluster", answer.version_info)
        ]  # fmt: skip
        assert answer.version_info == initial[0].version_info
    finally:
        await _stop(task, client)
        await stop()  # type: ignore[operator]
        await state.close()


async def test_a_translation_failure_keeps_the_stream_and_the_last_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, target, stop = await _setup()
    client = SotwClient(target)
    task = asyncio.create_task(client.run())
    try:
        v1 = (await client.received(len(ORDER)))[-1].version_info
        real = xds_hub.build_resources  # the hub translates (once per translation key)
        failed = asyncio.Event()

        def broken(inputs):  # type: ignore[no-untyped-def]
            failed.set()
            raise InconsistentSnapshot("simulated translator bug")

        monkeypatch.setattr(xds_hub, "build_resources", broken)
        await state.configs.upsert_exact("api", "web", {"Action": "deny"})
        async with asyncio.timeout(10):
            await failed.wait()
        # Nothing pushed for the failed change, and the stream still serves the last version.
        answer = await client.barrier()
        assert (answer.type_url, answer.version_info) == (TYPE_LISTENER, v1)
        assert len(client.responses) == len(ORDER) + 1 and not task.done()
        monkeypatch.setattr(xds_hub, "build_resources", real)
        await state.configs.upsert_exact("ops", "web", {"Action": "deny"})
        pushed = (await client.received(len(ORDER) + 2))[-1]
        assert pushed.type_url == TYPE_LISTENER and pushed.version_info != v1
        assert not task.done()
    finally:
        await _stop(task, client)
        await stop()  # type: ignore[operator]
        await state.close()
