"""A mesh gateway's inputs, collected off the snapshot of a real core (in-memory store):
where it listens, every meshed service with its healthy sidecars, every other datacenter's
gateways, and the resources those inputs translate to."""

from __future__ import annotations

from typing import Any

from loom.control.state import State
from loom.domain.federation import FederationState
from loom.domain.mesh import Endpoint
from loom.xds.inputs import GatewayBind, GatewayInputs
from loom.xds.translate import build_resources
from loom.xds.translate.names import TYPE_LISTENER
from loom.xds.view import collect_inputs

GATEWAY: dict[str, Any] = {
    "Kind": "mesh-gateway", "Name": "mesh-gateway", "ID": "gw", "Address": "10.0.0.5",
    "Port": 8443, "TaggedAddresses": {"lan": {"Address": "10.0.0.5", "Port": 8443},
                                      "wan": {"Address": "198.51.100.5", "Port": 443}},
}  # fmt: skip


async def _gateway(state: State, **extra: Any) -> GatewayInputs:
    await state.catalog.agent_register({**GATEWAY, **extra})
    found = collect_inputs(state.snapshot(), "gw")
    assert isinstance(found, GatewayInputs)
    return found


async def _meshed(state: State, name: str, port: int, side: int) -> None:
    await state.catalog.agent_register(
        {"Name": name, "Port": port, "Check": {"TTL": "60s"},
         "Connect": {"SidecarService": {"Port": side, "Check": {"TTL": "60s"}}}}
    )  # fmt: skip
    for cid in (f"service:{name}", f"service:{name}-sidecar-proxy"):
        await state.catalog.update_check(cid, "passing", "")


async def test_a_gateway_listens_on_its_address_unless_told_to_bind_its_tagged_ones(
    state: State,
) -> None:
    got = await _gateway(state)
    assert got.binds == (GatewayBind("default", "10.0.0.5", 8443),)
    assert (got.service, got.namespace, got.datacenter) == ("mesh-gateway", "default", "dc1")
    tagged = await _gateway(state, Proxy={"Config": {
        "envoy_gateway_no_default_bind": True, "envoy_gateway_bind_tagged_addresses": True}})  # fmt: skip
    assert tagged.binds == (
        GatewayBind("lan", "10.0.0.5", 8443),
        GatewayBind("wan", "198.51.100.5", 443),
    )
    both = await _gateway(state, Proxy={"Config": {"envoy_gateway_bind_tagged_addresses": True}})
    assert [b.name for b in both.binds] == ["default", "wan"]  # lan is the default: once


async def test_every_meshed_service_is_routed_to_its_healthy_sidecars_only(state: State) -> None:
    await _meshed(state, "web", 8080, 21000)
    await _meshed(state, "api", 9090, 21001)
    await state.catalog.agent_register({"Name": "plain", "Port": 7000})  # no sidecar
    got = await _gateway(state)
    td = state.snapshot().trust_domain
    by_sni = {s.sni: s.endpoints for s in got.services}
    assert set(by_sni) == {f"web.default.dc1.internal.{td}", f"api.default.dc1.internal.{td}"}
    assert by_sni[f"web.default.dc1.internal.{td}"] == (Endpoint("127.0.0.1", 21000),)
    await state.catalog.update_check("service:web", "critical", "down")
    after = collect_inputs(state.snapshot(), "gw")
    assert isinstance(after, GatewayInputs)
    assert {s.sni: s.endpoints for s in after.services}[f"web.default.dc1.internal.{td}"] == ()


async def test_other_datacenters_with_gateways_are_routed_to_their_wan_addresses(
    state: State,
) -> None:
    await state.federation.write_state(
        FederationState("dc2", ("10.1.0.1:8500",), (Endpoint("203.0.113.9", 443),), (), "")
    )
    await state.federation.write_state(FederationState("dc3", ("10.2.0.1:8500",), (), (), ""))
    got = await _gateway(state)
    td = state.snapshot().trust_domain
    assert [(r.datacenter, r.cluster, r.gateways) for r in got.remotes] == [
        ("dc2", f"dc2.internal.{td}", (Endpoint("203.0.113.9", 443),))
    ]  # dc3 has no gateway: nothing to route to


async def test_the_gateways_inputs_translate_to_a_consistent_sni_listener(state: State) -> None:
    await _meshed(state, "web", 8080, 21000)
    await state.federation.write_state(
        FederationState("dc2", ("10.1.0.1:8500",), (Endpoint("203.0.113.9", 443),), (), "")
    )
    res = build_resources(await _gateway(state, Proxy={"Config": {"connect_timeout_ms": 250}}))
    (listener,) = res[TYPE_LISTENER].values()
    names = [c["filter_chain_match"]["server_names"][0] for c in listener["filter_chains"]]
    td = state.snapshot().trust_domain
    assert names == [f"web.default.dc1.internal.{td}", f"*.dc2.internal.{td}"]


async def test_a_gateway_is_no_sidecar_and_a_sidecar_is_no_gateway(state: State) -> None:
    await _meshed(state, "web", 8080, 21000)
    await _gateway(state)
    snap = state.snapshot()
    assert "gw" not in snap.proxies and "web-sidecar-proxy" not in snap.mesh_gateways
    assert collect_inputs(snap, "nope") is None


async def test_named_bind_addresses_replace_the_default_one(state: State) -> None:
    got = await _gateway(state, Proxy={"Config": {
        "envoy_gateway_no_default_bind": True,
        "envoy_gateway_bind_addresses": {"public": {"Address": "10.0.0.9", "Port": 9443},
                                         "inside": {"Address": "10.0.0.5", "Port": 8443}}}})  # fmt: skip
    assert got.binds == (
        GatewayBind("inside", "10.0.0.5", 8443),
        GatewayBind("public", "10.0.0.9", 9443),
    )
