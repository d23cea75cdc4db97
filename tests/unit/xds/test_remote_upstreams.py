"""Transparent proxy to other datacenters: an upstream per meshed remote service with a local VIP
(``_remote_transparent_upstreams``), and the outbound listener chain that matches it.

The core runs on an in-memory store; dc2's services arrive as a federation state, as the WAN
poller writes it, and get their VIPs from the reconciler (``loom.control.remotevips``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from loom.control.state import ServerSettings, State
from loom.domain.federation import FederationState, RemoteService
from loom.domain.mesh import Endpoint
from loom.store import Store
from loom.xds.inputs import ProxyInputs, Upstream
from loom.xds.translate import build_resources
from loom.xds.translate.names import TYPE_LISTENER
from loom.xds.view import collect_inputs

TPROXY = {"Proxy": {"Mode": "transparent"}}


def dc2(*services: tuple[str, bool, tuple[int, ...]]) -> FederationState:
    return FederationState(
        "dc2", ("10.20.0.1:8500",), (Endpoint("192.0.2.20", 8443),),
        tuple(RemoteService(name, "default", meshed, ("10.2.0.1",), ports,
                            (Endpoint("10.2.0.1", 21000),) if meshed else ())
              for name, meshed, ports in services),
        "2026-12-01T19:00:00Z",
    )  # fmt: skip


async def started(default_allow: bool = True) -> State:
    st = State(ServerSettings(default_allow=default_allow), store=Store())
    await st.start()
    await st.catalog.agent_register(
        {"Name": "web", "Port": 8080, "Connect": {"SidecarService": TPROXY}})
    await st.catalog.agent_register(
        {"Name": "db", "Port": 5432, "Connect": {"SidecarService": {}}})
    await st.federation.write_state(
        dc2(("api", True, (9090, 9091)), ("db", True, (5432,)), ("legacy", False, (80,))))
    await st.remote_vips.reconcile()
    return st


@pytest.fixture
async def state() -> AsyncIterator[State]:
    st = await started()
    try:
        yield st
    finally:
        await st.close()


def inputs(state: State, proxy_id: str = "web-sidecar-proxy") -> ProxyInputs:
    found = collect_inputs(state.snapshot(), proxy_id)
    assert found is not None
    return found


def remote_upstreams(inp: ProxyInputs) -> dict[str, Upstream]:
    return {u.service: u for u in inp.upstreams if u.datacenter == "dc2"}


async def test_each_meshed_remote_service_is_an_upstream_on_its_vip_and_ports(
    state: State,
) -> None:
    vips = state.remote_vips.addresses()
    ups = remote_upstreams(inputs(state))
    assert sorted(ups) == ["api", "db"]  # legacy has no sidecar over there: no VIP, no route
    api = ups["api"]
    assert api.virtual_ips == (vips[("dc2", "default", "api")],)
    assert api.ports == (9090, 9091)
    assert (api.instance_ips, api.headless, api.bind_port) == ((), False, 0)
    td = state.snapshot().trust_domain
    assert api.sni == f"api.default.dc2.internal.{td}"
    assert api.spiffe_id == f"spiffe://{td}/ns/default/dc/dc2/svc/api"
    # A service in both datacenters: the local one keeps its own upstream, dc2's is another.
    assert [u.datacenter for u in inputs(state).upstreams if u.service == "db"] == ["dc1", "dc2"]


async def test_the_outbound_listener_sends_the_remote_vip_to_the_dc2_cluster(
    state: State,
) -> None:
    inp = inputs(state)
    api = remote_upstreams(inp)["api"]
    [outbound] = [
        v for k, v in build_resources(inp)[TYPE_LISTENER].items() if k.startswith("outbound")
    ]
    chains = [c for c in outbound["filter_chains"] if c["name"].startswith(f"vip:{api.sni}")]
    assert chains, [c["name"] for c in outbound["filter_chains"]]
    for chain in chains:
        prefixes = chain["filter_chain_match"]["prefix_ranges"]
        assert prefixes == [{"address_prefix": api.virtual_ips[0], "prefix_len": 32}]
        cluster = _cluster_of(chain)
        assert cluster == api.sni
    ports = {c["filter_chain_match"].get("destination_port") for c in chains}
    assert {9090, 9091} <= ports


def _cluster_of(chain: dict[str, Any]) -> str:
    [tcp] = chain["filters"]
    cluster: str = tcp["typed_config"]["cluster"]
    return cluster


async def test_a_proxy_not_in_transparent_mode_gets_no_remote_upstreams(state: State) -> None:
    assert remote_upstreams(inputs(state, "db-sidecar-proxy")) == {}


async def test_remote_upstreams_follow_the_remote_state(state: State) -> None:
    await state.federation.write_state(dc2(("db", True, (5432,))))
    await state.remote_vips.reconcile()
    assert sorted(remote_upstreams(inputs(state))) == ["db"]


async def test_with_default_deny_only_intended_remote_services_are_upstreams() -> None:
    st = await started(default_allow=False)
    try:
        assert remote_upstreams(inputs(st)) == {}
        await st.configs.write({"Kind": "service-intentions", "Name": "api",
                                "Sources": [{"Name": "web", "Action": "allow"}]})  # fmt: skip
        assert sorted(remote_upstreams(inputs(st))) == ["api"]
    finally:
        await st.close()


async def test_the_remote_upstream_dials_what_the_mesh_gateway_mode_picks(state: State) -> None:
    # No mode: dc2's sidecars directly, as the state publishes them.
    assert remote_upstreams(inputs(state))["api"].endpoints == (Endpoint("10.2.0.1", 21000),)
    await state.catalog.agent_register({
        "Kind": "mesh-gateway", "Name": "mesh-gateway", "Port": 8443, "Address": "10.1.0.50",
        "TaggedAddresses": {"wan": {"Address": "198.51.100.1", "Port": 443}},
    })  # fmt: skip
    await state.configs.write(
        {"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": "local"}})
    assert remote_upstreams(inputs(state))["api"].endpoints == (Endpoint("10.1.0.50", 8443),)
    await state.configs.write(
        {"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": "remote"}})
    assert remote_upstreams(inputs(state))["api"].endpoints == (Endpoint("192.0.2.20", 8443),)
