"""Local VIPs for other datacenters' services: the pure plan, and the reconciler over a real core
(in-memory store, and SQLite across a restart), with the name table that carries them."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.control.indexes import REMOTE_VIP_NET
from loom.control.nametable import build_name_table, name_table_text
from loom.control.remotevips import plan, split_remote_vip_key, wanted_keys
from loom.control.state import ServerSettings, State
from loom.dns.resolve import QTYPE_A, Query, View, resolve
from loom.dns.table import NameTable
from loom.domain.federation import FederationState, RemoteService
from loom.domain.mesh import Endpoint, MeshSnapshot
from loom.store.tables import REMOTE_VIPS


def remote(name: str, namespace: str = "default", *, meshed: bool = True,
           addresses: tuple[str, ...] = ("10.2.0.1",), ports: tuple[int, ...] = (8080,),
           ) -> RemoteService:  # fmt: skip
    endpoints = tuple(Endpoint(a, 21000) for a in addresses) if meshed else ()
    return RemoteService(name, namespace, meshed, addresses, ports, endpoints)


def dc_state(dc: str, *services: RemoteService) -> FederationState:
    return FederationState(dc, (f"{dc}.example:8500",), (Endpoint("192.0.2.9", 8443),),
                           services, "2026-12-01T19:00:00Z")  # fmt: skip


# ---- the plan (pure) ------------------------------------------------------------------------


def test_new_services_get_the_lowest_free_addresses_of_the_remote_block_in_key_order() -> None:
    got = plan({"dc2/default/b", "dc2/default/a", "dc3/ns1/a"}, {})
    assert dict(got.allocate) == {
        "dc2/default/a": "240.241.0.1",
        "dc2/default/b": "240.241.0.2",
        "dc3/ns1/a": "240.241.0.3",
    }
    assert got.free == () and got.unplaced == ()


def test_kept_services_keep_their_address_and_a_freed_one_is_reused_first() -> None:
    current = {"dc2/default/a": "240.241.0.1", "dc2/default/b": "240.241.0.2"}
    got = plan({"dc2/default/b", "dc2/default/c"}, current)
    assert got.free == ("dc2/default/a",)
    assert dict(got.allocate) == {"dc2/default/c": "240.241.0.1"}


def test_network_and_broadcast_addresses_are_skipped() -> None:
    current = {f"dc2/default/s{n}": f"240.241.0.{n}" for n in range(1, 255)}
    got = plan({*current, "dc2/default/new"}, current)
    assert dict(got.allocate) == {"dc2/default/new": "240.241.1.1"}


def test_a_stored_address_outside_the_block_or_taken_twice_is_replaced() -> None:
    current = {"dc2/default/a": "240.0.0.7", "dc2/default/b": "240.241.0.1",
               "dc2/default/c": "240.241.0.1", "dc2/default/d": "not an address"}  # fmt: skip
    got = plan(set(current), current)
    assert dict(got.allocate) == {
        "dc2/default/a": "240.241.0.2",
        "dc2/default/c": "240.241.0.3",
        "dc2/default/d": "240.241.0.4",
    }


def test_when_the_block_is_full_the_rest_are_left_without_an_address() -> None:
    usable = sum(1 for n in range(REMOTE_VIP_NET.num_addresses) if n & 0xFF not in (0, 255))
    wanted = {f"dc2/default/s{n:06d}" for n in range(usable + 2)}
    got = plan(wanted, {})
    assert len(got.allocate) == usable and len(got.unplaced) == 2
    assert len(set(got.allocate.values())) == usable


# ---- the reconciler over the core -----------------------------------------------------------


async def test_meshed_services_of_another_datacenter_get_local_vips_in_the_snapshot(
    state: State,
) -> None:
    await state.federation.write_state(
        dc_state("dc2", remote("api", "ns1"), remote("legacy", meshed=False)))
    assert await state.remote_vips.reconcile()
    assert state.remote_vips.addresses() == {("dc2", "ns1", "api"): "240.241.0.1"}
    assert state.snapshot().remote_vips == {("dc2", "ns1", "api"): "240.241.0.1"}
    assert not await state.remote_vips.reconcile()  # nothing to change: no write


async def test_a_vip_is_freed_when_its_service_leaves_the_remote_state(state: State) -> None:
    await state.federation.write_state(dc_state("dc2", remote("api"), remote("web")))
    await state.remote_vips.reconcile()
    await state.federation.write_state(dc_state("dc2", remote("web")))
    await state.remote_vips.reconcile()
    assert state.remote_vips.addresses() == {("dc2", "default", "web"): "240.241.0.2"}
    await state.federation.write_state(dc_state("dc2", remote("web"), remote("db")))
    await state.remote_vips.reconcile()
    assert state.remote_vips.addresses()[("dc2", "default", "db")] == "240.241.0.1"


async def test_the_running_reconciler_allocates_after_a_state_is_written(state: State) -> None:
    task = asyncio.create_task(state.remote_vips.run())
    try:
        seen = state.store.table_index([REMOTE_VIPS.name])
        await state.federation.write_state(dc_state("dc2", remote("api")))
        await state.store.wait([REMOTE_VIPS.name], seen, timeout=10)
        assert state.remote_vips.addresses() == {("dc2", "default", "api"): "240.241.0.1"}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_vips_stay_the_same_across_a_server_restart(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path)
    first = State(settings)
    await first.start()
    try:
        await first.federation.write_state(dc_state("dc2", remote("b"), remote("a")))
        await first.federation.write_state(dc_state("dc3", remote("a")))
        await first.remote_vips.reconcile()
        before = first.remote_vips.addresses()
    finally:
        await first.close()
    second = State(settings)
    await second.start()
    try:
        assert not await second.remote_vips.reconcile()
        assert second.remote_vips.addresses() == before
        await second.federation.write_state(dc_state("dc2", remote("b"), remote("c")))
        await second.remote_vips.reconcile()
        after = second.remote_vips.addresses()
        assert after[("dc2", "default", "b")] == before[("dc2", "default", "b")]
        assert after[("dc3", "default", "a")] == before[("dc3", "default", "a")]
        assert after[("dc2", "default", "c")] == before[("dc2", "default", "a")]  # reused
    finally:
        await second.close()


# ---- the name table with other datacenters ---------------------------------------------------


async def test_the_name_table_carries_remote_services_and_parses_back(state: State) -> None:
    await state.catalog.agent_register({"Name": "web", "Port": 80, "Namespace": "default"})
    await state.federation.write_state(dc_state(
        "dc2", remote("api", addresses=("10.2.0.1", "10.2.0.2")), remote("web"),
        remote("legacy", meshed=False, addresses=("10.2.0.7", "legacy.dc2.example"))))
    await state.remote_vips.reconcile()
    doc = build_name_table(state.snapshot())
    remote_entries = [s for s in doc["Services"] if s["Datacenter"] == "dc2"]
    assert [(s["Name"], s["VirtualIPs"]) for s in remote_entries] == [
        ("api", ["240.241.0.1"]), ("legacy", []), ("web", ["240.241.0.2"])]
    assert remote_entries[1]["Instances"] == [{"Address": "10.2.0.7"}]  # host names left out
    table = NameTable.from_json(json.loads(name_table_text(state.snapshot())))
    view = View(namespace="default")

    def answer(name: str) -> list[str]:
        res = resolve(Query(name, QTYPE_A), table, view)
        return [".".join(str(b) for b in a) for a in res.addresses]

    assert answer("api") == ["240.241.0.1"]
    assert answer("api.service.dc2.consul") == ["10.2.0.1", "10.2.0.2"]
    assert answer("web.default.svc.cluster.local") == ["240.0.0.1"]  # the local one wins
    assert answer("web.virtual.dc2.consul") == ["240.241.0.2"]


async def test_hostile_remote_names_are_skipped_counted_and_logged(
    state: State, caplog: pytest.LogCaptureFixture
) -> None:
    long_name = ".".join(["a"] * 300)
    await state.federation.write_state(dc_state(
        "dc2", remote("api"), remote("bad name!"), remote(long_name), remote("x" * 64),
        remote("ok", "ns.with.dots")))
    with caplog.at_level(logging.WARNING, logger="loom.control.remotevips"):
        await state.remote_vips.reconcile()
        await state.remote_vips.reconcile()  # seen before: not counted again
    assert state.remote_vips.skipped_total == 4
    assert state.remote_vips.addresses() == {("dc2", "default", "api"): "240.241.0.1"}
    assert sum("is not a DNS label" in r.getMessage() for r in caplog.records) == 4
    doc = build_name_table(state.snapshot())
    assert [s["Name"] for s in doc["Services"] if s["Datacenter"] == "dc2"] == ["api"]
    assert NameTable.from_json(doc).lookup("api.default.svc.cluster.local") is not None



# ---- whatever a peer sends, the table stays valid (hypothesis) -------------------------------

any_text = st.one_of(
    st.text(max_size=70),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=80),
    st.just(".".join(["a"] * 300)),
)
any_address = st.one_of(st.ip_addresses().map(str), st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(
    services=st.lists(
        st.tuples(any_text, any_text, st.booleans(), st.lists(any_address, max_size=4)),
        max_size=8,
    ),
    datacenter=st.one_of(st.just("dc2"), any_text).filter(lambda dc: dc != "dc1"),
)
def test_no_remote_state_breaks_the_name_table(
    services: list[tuple[str, str, bool, list[str]]], datacenter: str
) -> None:
    remotes = tuple(RemoteService(n, ns, meshed, tuple(addrs), (80,), ())
                    for n, ns, meshed, addrs in services)  # fmt: skip
    states = [dc_state(datacenter, *remotes)]
    wanted, _ = wanted_keys(states)
    vips = plan(wanted, {}).allocate
    snap = MeshSnapshot(1, 1, "dc1", "td.consul", "", True,
                        remote={datacenter: states[0]},
                        remote_vips={split_remote_vip_key(k): v for k, v in vips.items()},
                        )  # fmt: skip
    table = NameTable.from_json(json.loads(json.dumps(build_name_table(snap))))
    listed = {(s.namespace, s.name) for s in table.services if s.datacenter != "dc1"}
    for key in wanted:
        _, ns, name = split_remote_vip_key(key)
        assert (ns.lower(), name.lower()) in listed
    for svc in table.services:
        assert len(svc.virtual_ips) <= 1
