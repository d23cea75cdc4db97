"""The hub tells every subscribed session of a mesh write once per bump, directly (no watcher
task per stream), and stops telling a session once it unsubscribes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from loom.control.state import ServerSettings, State
from loom.store import Store
from loom.xds.hub import Hub


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    state = State(ServerSettings(), store=Store())
    await state.start()
    hub = Hub(state)
    hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
        await state.close()


async def register(hub: Hub, name: str) -> None:
    await hub.state.catalog.agent_register({"Name": name, "Port": 8000})


async def test_a_mesh_write_notifies_each_subscriber_until_it_unsubscribes(hub: Hub) -> None:
    told: dict[str, list[int]] = {"a": [], "b": []}
    arrived = {k: asyncio.Event() for k in told}

    def notify(key: str) -> None:
        told[key].append(hub.generation)
        arrived[key].set()

    hub.subscribe(1, lambda: notify("a"))
    hub.subscribe(2, lambda: notify("b"))
    await register(hub, "web")
    await asyncio.wait_for(asyncio.gather(arrived["a"].wait(), arrived["b"].wait()), 10)
    assert told["a"] == told["b"] == [hub.generation]

    hub.unsubscribe(1)
    arrived["b"].clear()
    before = list(told["a"])
    await register(hub, "api")
    await asyncio.wait_for(arrived["b"].wait(), 10)
    assert told["a"] == before  # unsubscribed: not told again
    assert told["b"][-1] == hub.generation and len(told["b"]) >= 2


async def test_a_hub_whose_subscribers_declare_nothing_builds_no_snapshot_per_write(
    hub: Hub,
) -> None:
    """Every subscriber is woken anyway: registering thousands of services before any proxy
    connects must not build a mesh snapshot per write."""
    arrived = asyncio.Event()
    hub.subscribe(1, arrived.set)
    before = hub.generation
    await register(hub, "web")
    await asyncio.wait_for(arrived.wait(), 10)
    assert hub.generation > before
    assert hub.view is None
