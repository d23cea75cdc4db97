"""The incremental tracker of who runs each check decides as a full scan of the node would,
whatever sequence of registrations, sidecars, deregistrations and check writes led there."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.control.state import ServerSettings, State
from loom.domain.checkstate import DATAPLANE, SERVER, check_runner, sidecars_by_destination
from loom.domain.records import Check
from loom.store import Store

TCP = {"TCP": "127.0.0.1:1", "Interval": "1s"}
REAP = {"TCP": "127.0.0.1:1", "Interval": "1s", "DeregisterCriticalServiceAfter": "1m"}
NAMES = ("a", "b", "c")

Op = tuple[str, str]
KINDS = ("plain", "checked", "reaped", "sidecar", "gone", "proxy-gone", "node-check")
ops = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(NAMES)), max_size=25)


def _full_scan(state: State) -> list[str]:
    """The decision the server made before the tracker: every check of the node, each time."""
    node = state.catalog.settings.node
    local = state.catalog.instances_on(node)
    proxies = {i.id: i for i in local if i.proxy is not None}
    sidecars = sidecars_by_destination(local)
    return sorted(
        c.check_id for c in state.catalog.checks_on(node)
        if check_runner(c, proxies, sidecars)[0] == SERVER
    )  # fmt: skip


def _full_scan_dataplanes(state: State) -> dict[str, list[str]]:
    node = state.catalog.settings.node
    local = state.catalog.instances_on(node)
    proxies = {i.id: i for i in local if i.proxy is not None}
    sidecars = sidecars_by_destination(local)
    out: dict[str, list[str]] = {}
    for c in state.catalog.checks_on(node):
        who, owner = check_runner(c, proxies, sidecars)
        if who == DATAPLANE:
            out.setdefault(owner, []).append(c.check_id)
    return {k: sorted(v) for k, v in out.items()}


def _reapable(state: State) -> list[str]:
    node = state.catalog.settings.node
    return sorted(
        c.check_id for c in state.catalog.checks_on(node)
        if c.definition is not None and c.definition.deregister_after_s and c.service_id
    )  # fmt: skip


async def _apply(state: State, op: Op) -> None:
    kind, name = op
    cat = state.catalog
    if kind == "plain":
        await cat.agent_register({"Name": name})
    elif kind == "checked":
        await cat.agent_register({"Name": name, "Check": TCP})
    elif kind == "reaped":
        await cat.agent_register({"Name": name, "Check": REAP})
    elif kind == "sidecar":
        await cat.agent_register({"Name": f"{name}-sidecar-proxy", "Kind": "connect-proxy",
                                  "Port": 21000 + NAMES.index(name), "Proxy": {
                                      "DestinationServiceName": name,
                                      "DestinationServiceID": name}})  # fmt: skip
    elif kind == "node-check":
        await state.agent_checks.register({"Name": f"node-{name}", **TCP})
    elif kind == "gone" and cat.find(name) is not None:
        await cat.agent_deregister(name)
    elif kind == "proxy-gone" and cat.find(f"{name}-sidecar-proxy") is not None:
        await cat.agent_deregister(f"{name}-sidecar-proxy")


def _ids(checks: list[Check]) -> list[str]:
    return sorted(c.check_id for c in checks)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_the_tracker_decides_as_a_full_scan_after_every_write(sequence: list[Op]) -> None:
    async def run() -> None:
        state = State(ServerSettings(), Store())
        await state.store.open()
        for op in sequence:
            await _apply(state, op)
            assert _ids(state.agent_checks.server_owned()) == _full_scan(state)
            by_runner = state.agent_checks.dataplane_owned()
            assert {k: _ids(v) for k, v in by_runner.items()} == _full_scan_dataplanes(state)
            for runner, checks in by_runner.items():
                inst = state.catalog.find(runner)
                assert inst is not None
                assert _ids(state.agent_checks._server.run_by(inst)) == _ids(checks)
            assert sorted(c.check_id for c in state.agent_checks._server.reapable.values()) == (
                _reapable(state)
            )

    asyncio.run(run())


async def test_a_reload_of_the_store_makes_the_tracker_decide_everything_again() -> None:
    state = State(ServerSettings(), Store())
    await state.store.open()
    await state.catalog.agent_register({"Name": "db", "Check": TCP})
    assert _ids(state.agent_checks.server_owned()) == ["service:db"]
    state.store._reset_indexers()  # what a full reload of the view does
    assert _ids(state.agent_checks.server_owned()) == ["service:db"]
