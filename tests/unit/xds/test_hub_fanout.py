"""The hub tells every subscribed session of a mesh write once per bump, directly (no watcher
task per stream), and stops telling a session once it unsubscribes."""

from __future__ import annotations

import asyncio
import functools

from loom.xds.deps import PROXY
from loom.xds.hub import Hub


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


async def test_a_write_wakes_the_subscribers_of_its_dependency_as_they_come_and_go(
    hub: Hub,
) -> None:
    """The index of who depends on what follows subscriptions, changed dependencies and
    unsubscriptions, from several subscribers of one dependency down to one and to none."""
    x, y, z = ((PROXY, f"{n}-sidecar-proxy") for n in "xyz")
    woken: set[int] = set()
    bumped = asyncio.Event()
    hub.subscribe(0, bumped.set)  # declares nothing: told of every bump
    for key, deps in ((1, {x}), (2, {x}), (3, {x, y}), (4, {y})):
        hub.subscribe(key, functools.partial(woken.add, key), frozenset(deps))

    async def woken_by(name: str, port: int) -> set[int]:
        woken.clear()
        await hub.state.catalog.agent_register(
            {"Name": name, "Port": port, "Connect": {"SidecarService": {}}}
        )
        while hub.view is not hub.state.snapshot():
            bumped.clear()
            await asyncio.wait_for(bumped.wait(), 10)
        return set(woken)

    assert await woken_by("x", 8000) == {1, 2, 3}
    hub.unsubscribe(1)
    hub.depend(2, frozenset({y}))  # x: 3 alone; y: 2, 3, 4
    hub.depend(4, frozenset({z}))  # y: 2, 3
    assert await woken_by("x", 8001) == {3}
    assert await woken_by("y", 8000) == {2, 3}
    assert await woken_by("z", 8000) == {4}
    hub.depend(3, frozenset({x, y, z}))
    hub.depend(3, frozenset({x, y, z}))  # the same again changes nothing
    assert await woken_by("z", 8001) == {3, 4}
    hub.unsubscribe(3)
    hub.depend(2, frozenset({z}))  # nobody left on x nor y
    assert await woken_by("x", 8002) == set()
    assert await woken_by("y", 8001) == set()
    assert await woken_by("z", 8002) == {2, 4}
