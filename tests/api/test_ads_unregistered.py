"""A proxy the server does not know (a restart with an empty store, a deregistration) is
never sent an empty configuration: its requests wait for the registration, which is answered
at once with the real configuration. Real gRPC clients stand in for Envoy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from loom.addrs import parse_address
from loom.control.state import ServerSettings, State
from loom.xds import server as xds_server
from loom.xds.translate.names import ORDER, TYPE_CLUSTER, TYPE_LISTENER
from tests.api.test_ads_protocol import PROXY, SotwClient

WEB = {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": 21000}}}


class _Said(logging.Handler):
    """Sets an event once the xDS log says ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()

    async def wait(self) -> None:
        async with asyncio.timeout(10):
            await self.event.wait()


@pytest.fixture
def said() -> Iterator[type[_Said]]:
    handlers: list[_Said] = []
    logger = logging.getLogger("loom.xds")
    level = logger.level
    logger.setLevel(logging.INFO)

    def make(text: str) -> _Said:
        h = _Said(text)
        handlers.append(h)
        logging.getLogger("loom.xds").addHandler(h)
        return h

    yield make  # type: ignore[misc]
    for h in handlers:
        logger.removeHandler(h)
    logger.setLevel(level)


async def _server() -> tuple[State, str, object]:
    state = State(ServerSettings(http_addrs=(), grpc_addrs=()))
    await state.start()
    bound, stop = await xds_server.start_xds(state, [parse_address("127.0.0.1:0")])
    return state, bound[0], stop


class DeltaClient:
    """Reconnects as Envoy does after a server restart: it says what it already has."""

    def __init__(self, target: str, have: dict[str, dict[str, str]]) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.have = have
        self.responses: list[discovery_pb2.DeltaDiscoveryResponse] = []
        self.arrived = asyncio.Condition()

    async def _requests(self) -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        node = base_pb2.Node(id=PROXY)
        for t in (TYPE_CLUSTER, TYPE_LISTENER):
            yield discovery_pb2.DeltaDiscoveryRequest(
                node=node, type_url=t, initial_resource_versions=self.have[t]
            )
        await asyncio.Event().wait()  # keep the stream open

    async def run(self) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        async for resp in stub.DeltaAggregatedResources(self._requests()):
            async with self.arrived:
                self.responses.append(resp)
                self.arrived.notify_all()

    async def received(self, count: int) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        async with asyncio.timeout(10), self.arrived:
            await self.arrived.wait_for(lambda: len(self.responses) >= count)
        return list(self.responses)


async def _close(
    task: asyncio.Task[None], channel: grpc.aio.Channel, state: State, stop: object
) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await channel.close()
    await stop()  # type: ignore[operator]
    await state.close()


async def test_an_unknown_proxy_gets_no_empty_configuration_and_its_own_once_registered(
    said: type[_Said],
) -> None:
    state, target, stop = await _server()
    client = SotwClient(target)
    told = said(f"proxy {PROXY} is not registered; keeping its last configuration")
    task = asyncio.create_task(client.run())
    try:
        await told.wait()
        await state.catalog.agent_register(WEB)
        responses = await client.received(len(ORDER))
        # The stream is ordered: an empty answer sent before the registration would come first.
        first = {r.type_url: r for r in reversed(responses)}
        assert [r.type_url for r in responses[: len(ORDER)]] == list(ORDER)
        assert len(first[TYPE_LISTENER].resources) == 1  # the public listener
        assert len(first[TYPE_CLUSTER].resources) >= 1  # the local app
        assert not task.done()
    finally:
        await _close(task, client.channel, state, stop)


async def test_a_deregistered_proxy_keeps_its_configuration_until_it_registers_again(
    said: type[_Said],
) -> None:
    state, target, stop = await _server()
    await state.catalog.agent_register(WEB)
    client = SotwClient(target)
    task = asyncio.create_task(client.run())
    try:
        initial = await client.received(len(ORDER))
        told = said(f"proxy {PROXY} is not registered; keeping its last configuration")
        await state.catalog.agent_deregister("web-sidecar-proxy")
        await state.catalog.agent_deregister("web")
        await told.wait()
        # A change while unregistered is not pushed either; registering again sends it.
        await state.configs.upsert_exact("api", "web", {"Action": "deny"})
        back = said(f"proxy {PROXY} is registered; sending its configuration")
        quiet = len(client.responses)
        await state.catalog.agent_register(WEB)
        await back.wait()
        # The listener (the deny) is what the re-registration pushes; under load an unchanged
        # type may be answered again before it, so look for the first listener after the start.
        async with asyncio.timeout(10), client.arrived:
            await client.arrived.wait_for(
                lambda: any(r.type_url == TYPE_LISTENER for r in client.responses[len(ORDER):])
            )
        pushed = next(r for r in client.responses[len(ORDER):] if r.type_url == TYPE_LISTENER)
        assert client.responses.index(pushed) >= quiet  # nothing pushed while unregistered
        assert pushed.version_info != initial[-1].version_info
        assert len(pushed.resources) == 1
        assert all(r.resources for r in client.responses if r.type_url == TYPE_LISTENER)
    finally:
        await _close(task, client.channel, state, stop)


async def test_a_reconnecting_delta_proxy_the_server_does_not_know_loses_nothing(
    said: type[_Said],
) -> None:
    state, target, stop = await _server()
    have = {
        TYPE_CLUSTER: {"local_app": "v-old"},
        TYPE_LISTENER: {"public_listener:0.0.0.0:21000": "v-old"},
    }
    client = DeltaClient(target, have)
    told = said(f"proxy {PROXY} is not registered; keeping its last configuration")
    task = asyncio.create_task(client.run())
    try:
        await told.wait()
        await state.catalog.agent_register(WEB)
        responses = await client.received(2)
        # Nothing Envoy has is removed before the registration; after it, the real resources.
        assert [r.type_url for r in responses[:2]] == [TYPE_CLUSTER, TYPE_LISTENER]
        assert all(r.resources for r in responses[:2])
        assert not [n for r in responses for n in r.removed_resources]
        assert not task.done()
    finally:
        await _close(task, client.channel, state, stop)
