"""The federation as a server sees it: other datacenters' states kept in the store, the
datacenters list, and what a mesh snapshot takes from both (remote states, gateways)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.control.federation import reachable_addrs
from loom.control.state import ServerSettings, State
from loom.domain.federation import FederationState
from loom.domain.fields import ValidationError
from loom.domain.mesh import Endpoint
from loom.store import Store
from loom.store.sqlite import SqliteStore


def _state(dc: str, *servers: str) -> FederationState:
    return FederationState(dc, servers, (), (), "2026-12-01T19:00:00Z")


async def test_datacenters_list_this_one_first_then_the_learned_ones_sorted() -> None:
    state = State(ServerSettings(datacenter="dc2", primary_datacenter="dc1"), store=Store())
    await state.start()
    try:
        fed = state.federation
        assert fed.datacenters() == ["dc2"] and not fed.is_primary and fed.primary == "dc1"
        assert await fed.write_state(_state("dc3", "10.0.0.3:8500"))
        assert await fed.write_state(_state("dc1", "10.0.0.1:8500"))
        assert fed.datacenters() == ["dc2", "dc1", "dc3"]
        assert fed.servers("dc3") == ("10.0.0.3:8500",) and fed.servers("dc9") == ()
        index = state.store.index
        assert not await fed.write_state(_state("dc3", "10.0.0.3:8500"))  # unchanged: no write
        assert state.store.index == index
        with pytest.raises(ValidationError):
            await fed.write_state(_state("dc2", "10.0.0.2:8500"))
    finally:
        await state.close()


async def test_a_server_without_a_primary_given_is_the_primary() -> None:
    state = State(ServerSettings(datacenter="east"), store=Store())
    await state.start()
    try:
        assert state.federation.is_primary and state.federation.primary == "east"
        assert state.snapshot().primary_datacenter == "east"
    finally:
        await state.close()


def test_the_addresses_other_datacenters_dial_leave_unix_sockets_out_and_name_wildcards() -> None:
    addrs = ("unix:/run/loom.sock", "http://127.0.0.1:8500", ":8600", "0.0.0.0:8700",
             "https://0.0.0.0:8501", "https://127.0.0.1:8502")  # fmt: skip
    assert reachable_addrs(addrs, "10.1.2.3") == (
        "127.0.0.1:8500", "10.1.2.3:8600", "10.1.2.3:8700",
        "https://10.1.2.3:8501", "https://127.0.0.1:8502",
    )  # fmt: skip


async def test_a_new_remote_state_makes_a_new_snapshot_that_carries_it() -> None:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        before = state.snapshot()
        assert before.remote == {}
        await state.federation.write_state(_state("dc2", "10.0.0.2:8500"))
        after = state.snapshot()
        assert after is not before and after.mesh_index > before.mesh_index
        assert after.remote == {"dc2": _state("dc2", "10.0.0.2:8500")}
    finally:
        await state.close()


async def test_learned_states_survive_a_restart_of_a_durable_store(tmp_path: Path) -> None:
    state = State(ServerSettings(), store=SqliteStore(tmp_path))
    await state.start()
    await state.federation.write_state(_state("dc2", "10.0.0.2:8500"))
    await state.close()
    again = State(ServerSettings(), store=SqliteStore(tmp_path))
    await again.start()
    try:
        assert again.federation.datacenters() == ["dc1", "dc2"]
        assert again.federation.servers("dc2") == ("10.0.0.2:8500",)
    finally:
        await again.close()


GATEWAY = {
    "Name": "mesh-gateway",
    "Kind": "mesh-gateway",
    "Port": 8443,
    "Address": "10.0.0.9",
    "TaggedAddresses": {
        "lan": {"Address": "10.0.0.9", "Port": 8443},
        "wan": {"Address": "198.51.100.9", "Port": 443},
    },
}


async def test_healthy_mesh_gateways_are_in_the_snapshot_as_gateways_only() -> None:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        await state.catalog.agent_register(GATEWAY)
        await state.catalog.agent_register(
            {"Name": "gw2", "Kind": "mesh-gateway", "Port": 9443, "Address": "10.0.0.8"}
        )
        await state.catalog.agent_register(
            {"Name": "web", "Port": 80, "Connect": {"SidecarService": {}}}
        )
        snap = state.snapshot()
        # store key order: gw2, then mesh-gateway
        assert snap.gateways_lan == (Endpoint("10.0.0.8", 9443), Endpoint("10.0.0.9", 8443))
        assert snap.gateways_wan == (Endpoint("10.0.0.8", 9443), Endpoint("198.51.100.9", 443))
        assert sorted(snap.services) == [("default", "web")]
        assert sorted(snap.endpoints) == [("default", "web")]
        assert snap.meshed == {("default", "web")}
        assert sorted(snap.proxies) == ["web-sidecar-proxy"]
        await state.catalog.agent_register(
            {**GATEWAY, "Check": {"TTL": "30s", "Status": "critical"}}
        )
        assert state.snapshot().gateways_wan == (Endpoint("10.0.0.8", 9443),)
    finally:
        await state.close()


async def test_a_mesh_gateway_needs_a_port_and_takes_no_sidecar() -> None:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        with pytest.raises(ValidationError, match="Port must be non-zero for a mesh-gateway"):
            await state.catalog.agent_register({"Name": "gw", "Kind": "mesh-gateway"})
        with pytest.raises(ValidationError, match="A mesh-gateway cannot have a sidecar service defined"):
            await state.catalog.agent_register(
                {"Name": "gw", "Kind": "mesh-gateway", "Port": 1,
                 "Connect": {"SidecarService": {}}}
            )  # fmt: skip
    finally:
        await state.close()


async def test_the_published_state_names_services_sidecars_and_gateways_and_keeps_its_time() -> None:
    state = State(ServerSettings(), store=Store())
    await state.start()
    try:
        state.federation.own_servers = ("10.0.0.1:8500",)
        await state.catalog.agent_register(GATEWAY)
        await state.catalog.agent_register({"Name": "web", "Port": 80, "Address": "10.0.0.5"})
        await state.catalog.agent_register(
            {"Name": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
             "Address": "10.0.0.5", "Proxy": {"DestinationServiceName": "web"}}
        )  # fmt: skip
        first = state.federation.own_state(state.snapshot())
        assert first.datacenter == "dc1" and first.servers == ("10.0.0.1:8500",)
        assert first.mesh_gateways == (Endpoint("198.51.100.9", 443),)
        [web] = first.services
        assert (web.name, web.meshed, web.addresses) == ("web", True, ("10.0.0.5",))
        assert web.ports == (80,)
        assert web.endpoints == (Endpoint("10.0.0.5", 21000),)
        before = state.snapshot()
        await state.configs.write({"Kind": "service-defaults", "Name": "web"})
        assert state.snapshot() is not before  # a new snapshot, the same published state
        assert state.federation.own_state(state.snapshot()) is first
        await state.catalog.agent_register({"Name": "api", "Port": 81})
        second = state.federation.own_state(state.snapshot())
        assert [s.name for s in second.services] == ["api", "web"]
        assert second.updated_at >= first.updated_at
    finally:
        await state.close()
