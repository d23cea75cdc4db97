"""A plain ACK is recorded as it is read, with no response and no hop to the stream's task,
while NACKs, subscriptions and requests behind queued ones still go through the stream in
order: ``loom proxy status`` shows the same Sent/Acked/Nack either way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from loom.control.state import State
from loom.xds.hub import Hub
from loom.xds.server import DeltaSession, SotwSession
from loom.xds.session import Session
from loom.xds.translate.names import ORDER, TYPE_ENDPOINTS, TYPE_LISTENER

NODE = base_pb2.Node(id="web-sidecar-proxy")


class Stream:
    """Requests the test sends, and the responses the session yields."""

    def __init__(self, session_type: type[Session], hub: Hub) -> None:
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.session = session_type(hub, self._requests())
        self.responses: list[Any] = []
        self.arrived = asyncio.Condition()
        self.task = asyncio.create_task(self._run())

    async def _requests(self) -> AsyncIterator[Any]:
        while (req := await self.requests.get()) is not None:
            yield req

    async def _run(self) -> None:
        async for resp in self.session.run():
            async with self.arrived:
                self.responses.append(resp)
                self.arrived.notify_all()

    async def until(self, count: int) -> list[Any]:
        async with asyncio.timeout(10), self.arrived:
            await self.arrived.wait_for(lambda: len(self.responses) >= count)
        return self.responses[:count]


@pytest.fixture
async def state(state: State) -> State:
    """The shared state with ``web`` and its sidecar registered before the hub starts."""
    await state.catalog.agent_register(
        {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": 21000}}}
    )
    return state


async def _close(stream: Stream) -> None:
    await stream.requests.put(None)
    await asyncio.wait_for(stream.task, 10)


async def test_delta_acks_are_recorded_without_a_response_and_a_nack_still_is(hub: Hub) -> None:
    stream = Stream(DeltaSession, hub)
    for t in ORDER:
        stream.requests.put_nowait(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=t))
    first = await stream.until(len(ORDER))
    for resp in first:
        stream.requests.put_nowait(
            discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce)
        )
    # A subscription after the ACKs is answered: by then every ACK before it was read.
    stream.requests.put_nowait(
        discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_ENDPOINTS, resource_names_subscribe=["x"])
    )
    [*_, answer] = await stream.until(len(ORDER) + 1)
    assert list(answer.removed_resources) == ["x"]
    status = stream.session.status()
    assert status["Synced"] is False  # the endpoints answer is not ACKed yet
    assert all(
        v["Acked"] == v["Sent"] for k, v in status["Types"].items() if "ClusterLoad" not in k
    )
    nack = discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_ENDPOINTS, response_nonce=answer.nonce)
    nack.error_detail.message = "bad endpoints"
    stream.requests.put_nowait(nack)
    ack = discovery_pb2.DeltaDiscoveryRequest(
        type_url=TYPE_LISTENER, response_nonce=first[-1].nonce
    )
    stream.requests.put_nowait(ack)
    stream.requests.put_nowait(
        discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_ENDPOINTS, resource_names_subscribe=["y"])
    )
    await stream.until(len(ORDER) + 2)
    assert stream.session.status()["Types"]["ClusterLoadAssignment"]["Nack"] == "bad endpoints"
    assert len(stream.responses) == len(ORDER) + 2  # the ACKs were answered by nothing
    await _close(stream)


async def test_sotw_acks_are_recorded_without_a_response_and_the_proxy_is_synced(
    hub: Hub,
) -> None:
    stream = Stream(SotwSession, hub)
    for t in ORDER:
        stream.requests.put_nowait(discovery_pb2.DiscoveryRequest(node=NODE, type_url=t))
    first = await stream.until(len(ORDER))
    for resp in first:
        stream.requests.put_nowait(
            discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url, response_nonce=resp.nonce, version_info=resp.version_info
            )
        )
    # New names for the endpoints are answered after the ACKs before them.
    stream.requests.put_nowait(
        discovery_pb2.DiscoveryRequest(
            type_url=TYPE_ENDPOINTS,
            response_nonce=first[ORDER.index(TYPE_ENDPOINTS)].nonce,
            resource_names=["x"],
        )
    )
    [*_, answer] = await stream.until(len(ORDER) + 1)
    stream.requests.put_nowait(
        discovery_pb2.DiscoveryRequest(
            type_url=TYPE_ENDPOINTS, response_nonce=answer.nonce, resource_names=["x"]
        )
    )
    # The ACK of that answer has no response to wait for: a stream event says it was read.
    stream.requests.put_nowait(
        discovery_pb2.DiscoveryRequest(
            type_url=TYPE_ENDPOINTS, response_nonce=answer.nonce, resource_names=["x", "y"]
        )
    )
    await stream.until(len(ORDER) + 2)
    assert len(stream.responses) == len(ORDER) + 2
    types = stream.session.status()["Types"]
    assert types["ClusterLoadAssignment"]["Acked"] == answer.nonce
    assert all(
        types[t.rsplit(".", 1)[-1]]["Acked"] == r.nonce
        for t, r in zip(ORDER, first, strict=True)
        if t != TYPE_ENDPOINTS
    )
    await _close(stream)
