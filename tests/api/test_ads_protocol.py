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
from loom.xds import server as xds_server
from loom.xds.translate import InconsistentSnapshot
from loom.xds.translate.names import ORDER, TYPE_LISTENER

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

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        node = base_pb2.Node(id=PROXY)
        for t in ORDER:
            yield discovery_pb2.DiscoveryRequest(node=node, type_url=t)
        while True:
            yield await self.out.get()

    async def run(self) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        async for resp in stub.StreamAggregatedResources(self._requests()):
            self.responses.append(resp)
            # ACK exactly as Envoy does: echo version and nonce.
            self.out.put_nowait(discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url, version_info=resp.version_info, response_nonce=resp.nonce))  # fmt: skip

    def count(self, type_url: str) -> int:
        return sum(r.type_url == type_url for r in self.responses)


async def _settle(seconds: float = 0.4) -> None:
    await asyncio.sleep(seconds)


async def test_acks_never_cause_a_push_and_unrelated_writes_push_nothing() -> None:
    state, target, stop = await _setup()
    client = SotwClient(target)
    task = asyncio.create_task(client.run())
    try:
        await _settle()
        first = len(client.responses)
        assert first == len(ORDER)  # one answer per type, then quiet despite four ACKs
        await _settle()
        assert len(client.responses) == first
        # A write that does not touch this proxy's inputs: no push.
        await state.catalog.agent_register({"Name": "unrelated", "Port": 1})
        await _settle()
        assert len(client.responses) == first
        # A write that does (a deny intention to web): exactly one new listener version.
        await state.configs.upsert_exact("api", "web", {"Action": "deny"})
        await _settle()
        assert client.count(TYPE_LISTENER) == 2
        assert len(client.responses) == first + 1
    finally:
        task.cancel()
        await client.channel.close()
        await stop()  # type: ignore[operator]
        await state.close()


async def test_a_translation_failure_keeps_the_stream_and_the_last_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    state, target, stop = await _setup()
    client = SotwClient(target)
    task = asyncio.create_task(client.run())
    try:
        await _settle()
        real = xds_server.build_resources

        def broken(inputs):  # type: ignore[no-untyped-def]
            raise InconsistentSnapshot("simulated translator bug")

        monkeypatch.setattr(xds_server, "build_resources", broken)
        await state.configs.upsert_exact("api", "web", {"Action": "deny"})
        await _settle()
        assert client.count(TYPE_LISTENER) == 1 and not task.done()
        monkeypatch.setattr(xds_server, "build_resources", real)
        await state.configs.upsert_exact("ops", "web", {"Action": "deny"})
        await _settle()
        assert client.count(TYPE_LISTENER) == 2 and not task.done()
    finally:
        task.cancel()
        await client.channel.close()
        await stop()  # type: ignore[operator]
        await state.close()
