"""Upstreams in other datacenters and the destination side of cross-datacenter calls.

An upstream naming dc2 gets dc2's SNI and SPIFFE ID, and the endpoints its MeshGateway mode
picks (upstream > registration > service-defaults > proxy-defaults): ``local`` this DC's
gateways, ``remote`` dc2's, ``none`` dc2's sidecars; a DC nobody knows gives none.

A dc1 caller reaching dc2 presents ``spiffe://<td>/ns/<ns>/dc/dc1/svc/<svc>``; dc2's RBAC,
built from dc2's intentions, must judge it exactly as it judges a local caller of that name
(Consul's principal regex matches ``dc/[^/]+``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.control.state import ServerSettings, State
from loom.domain.federation import FederationState, RemoteService
from loom.domain.intentions import Intention, decide
from loom.domain.mesh import Endpoint
from loom.store import Store
from loom.xds.inputs import AccessRule, GatewayInputs, Principal, Upstream
from loom.xds.translate import build_resources
from loom.xds.translate.names import TYPE_CLUSTER
from loom.xds.translate.rbac import rbac_policies
from loom.xds.view import collect_inputs
from tests.unit.xds.test_translate import TD, envoy_allows

DC2_SIDECAR = Endpoint("10.2.0.5", 21000)
DC2_GATEWAY = Endpoint("198.51.100.2", 8443)
DC1_GATEWAY_LAN = Endpoint("10.1.0.9", 8443)
R = "service-resolver"

names = st.sampled_from(["web", "api", "*"])
nss = st.sampled_from(["default", "team", "*"])


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(
        st.tuples(nss, names, st.booleans()), max_size=4, unique_by=lambda r: (r[0], r[1])
    ),
    default_allow=st.booleans(),
    src=st.tuples(st.sampled_from(["default", "team"]), st.sampled_from(["web", "api", "db"])),
    dc=st.sampled_from(["dc1", "dc2", "eu-west_1"]),
)
def test_intentions_judge_callers_of_every_datacenter_alike(
    rules: list[tuple[str, str, bool]], default_allow: bool, src: tuple[str, str], dc: str
) -> None:
    intentions = [
        Intention(ns, name, "default", "db", "allow" if allow else "deny")
        for ns, name, allow in rules
    ]
    ordered = sorted(intentions, key=lambda i: (-i.precedence, i.source_ns, i.source))
    access = tuple(
        AccessRule(Principal(i.source_ns, i.source), i.action == "allow") for i in ordered
    )
    policy = rbac_policies(TD, access, default_allow)
    uri = f"spiffe://{TD}/ns/{src[0]}/dc/{dc}/svc/{src[1]}"
    expected = decide(intentions, src[0], src[1], "default", "db", default_allow).allowed
    assert envoy_allows(policy, uri) == expected


def test_a_caller_of_another_trust_domain_or_a_longer_name_is_not_matched() -> None:
    policy = rbac_policies(TD, (AccessRule(Principal("default", "web"), True),), False)
    assert envoy_allows(policy, f"spiffe://{TD}/ns/default/dc/dc2/svc/web")
    assert not envoy_allows(policy, f"spiffe://{TD}/ns/default/dc/dc2/svc/web2")
    assert not envoy_allows(policy, f"spiffe://other.{TD}/ns/default/dc/dc2/svc/web")
    assert not envoy_allows(policy, f"spiffe://{TD}/ns/default/dc/a/b/svc/web")


@pytest.fixture
async def state() -> AsyncIterator[State]:
    st_ = State(ServerSettings(), store=Store())
    await st_.start()
    try:
        await st_.federation.write_state(FederationState(
            "dc2", ("10.2.0.1:8500",), (DC2_GATEWAY,),
            (RemoteService("db", "default", True, ("10.2.0.4",), (5432,), (DC2_SIDECAR,)),),
            "2026-12-01T19:00:00Z",
        ))  # fmt: skip
        await st_.catalog.agent_register({
            "Name": "gw", "Kind": "mesh-gateway", "Port": 8443, "Address": "10.1.0.9",
            "TaggedAddresses": {"lan": {"Address": "10.1.0.9", "Port": 8443},
                                "wan": {"Address": "198.51.100.1", "Port": 8443}}})  # fmt: skip
        await st_.catalog.agent_register({"Name": "db", "ID": "db-local", "Port": 5432,
                                          "Connect": {"SidecarService": {"Port": 21001}}})  # fmt: skip
        for n in (1, 2):  # the sidecar's default checks: critical until its Envoy listens
            await st_.catalog.update_check(f"service:db-local-sidecar-proxy:{n}", "passing", "")
        yield st_
    finally:
        await st_.close()


async def _db(state: State, dc: str = "dc2", proxy: dict[str, Any] | None = None,
              upstream: dict[str, Any] | None = None) -> Upstream:  # fmt: skip
    up = {"DestinationName": "db", "LocalBindPort": 9191, "Datacenter": dc, **(upstream or {})}
    await state.catalog.agent_register({
        "Name": "web", "Port": 8080,
        "Connect": {"SidecarService": {"Port": 21002,
                                       "Proxy": {"Upstreams": [up], **(proxy or {})}}}})  # fmt: skip
    found = collect_inputs(state.snapshot(), "web-sidecar-proxy")
    assert found is not None
    [db] = [u for u in found.upstreams if u.bind_port == 9191]
    return db


async def test_an_upstream_in_dc2_names_dc2_and_dials_its_sidecars_without_a_mode(
    state: State,
) -> None:
    db = await _db(state)
    td = state.snapshot().trust_domain
    assert (db.datacenter, db.sni) == ("dc2", f"db.default.dc2.internal.{td}")
    assert db.spiffe_id == f"spiffe://{td}/ns/default/dc/dc2/svc/db"
    assert db.endpoints == (DC2_SIDECAR,)
    found = collect_inputs(state.snapshot(), "web-sidecar-proxy")
    assert found is not None
    tls = build_resources(found)[TYPE_CLUSTER][db.sni]["transport_socket"]["typed_config"]
    assert tls["sni"] == db.sni
    san = tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
    assert san["match_typed_subject_alt_names"][0]["matcher"]["exact"] == db.spiffe_id


async def test_mode_local_dials_this_dcs_gateways_and_remote_dc2s(state: State) -> None:
    assert (await _db(state, upstream={"MeshGateway": {"Mode": "local"}})).endpoints == (
        DC1_GATEWAY_LAN,
    )
    assert (await _db(state, upstream={"MeshGateway": {"Mode": "remote"}})).endpoints == (
        DC2_GATEWAY,
    )
    assert (await _db(state, upstream={"MeshGateway": {"Mode": "none"}})).endpoints == (
        DC2_SIDECAR,
    )


async def test_the_most_specific_mode_wins(state: State) -> None:
    await state.configs.write(
        {"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": "remote"}}
    )
    assert (await _db(state)).endpoints == (DC2_GATEWAY,)
    await state.configs.write(
        {"Kind": "service-defaults", "Name": "web", "MeshGateway": {"Mode": "local"}}
    )
    assert (await _db(state)).endpoints == (DC1_GATEWAY_LAN,)
    proxy = {"MeshGateway": {"Mode": "none"}}
    assert (await _db(state, proxy=proxy)).endpoints == (DC2_SIDECAR,)
    upstream = {"MeshGateway": {"Mode": "remote"}}
    assert (await _db(state, proxy=proxy, upstream=upstream)).endpoints == (DC2_GATEWAY,)


async def test_an_unknown_datacenter_has_no_endpoints_whatever_the_mode(state: State) -> None:
    for mode in ("", "none", "local", "remote"):
        db = await _db(state, "dc9", upstream={"MeshGateway": {"Mode": mode}})
        assert (db.datacenter, db.endpoints) == ("dc9", ())
        assert ".dc9.internal." in db.sni


async def test_the_local_datacenter_ignores_the_mode(state: State) -> None:
    db = await _db(state, "", upstream={"MeshGateway": {"Mode": "remote"}})
    assert db.datacenter == "dc1" and [e.port for e in db.endpoints] == [21001]


async def test_failover_to_dc2_goes_through_the_gateways_the_mode_picks(state: State) -> None:
    await state.configs.write({"Kind": R, "Name": "db", "Failover": {"*": {"Datacenters": ["dc2"]}}})
    db = await _db(state, "", upstream={"MeshGateway": {"Mode": "local"}})
    assert [e.port for e in db.endpoints] == [21001]
    [dc2] = db.failover
    assert ".dc2.internal." in dc2.sni and dc2.spiffe_id.endswith("/dc/dc2/svc/db")
    assert dc2.endpoints == (DC1_GATEWAY_LAN,)
    db = await _db(state, "")
    assert db.failover[0].endpoints == (DC2_SIDECAR,)


async def test_a_subset_in_another_dc_is_only_reached_through_a_gateway(state: State) -> None:
    await state.configs.write({"Kind": R, "Name": "db", "DefaultSubset": "v2",
                               "Subsets": {"v2": {"Filter": "Service.Meta.version == v2"}}})  # fmt: skip
    db = await _db(state)
    assert db.sni.startswith("v2.db.default.dc2.internal.") and db.endpoints == ()
    db = await _db(state, upstream={"MeshGateway": {"Mode": "remote"}})
    assert db.endpoints == (DC2_GATEWAY,)


async def test_a_gateway_routes_a_subset_of_its_own_dc_by_the_subsets_sni(state: State) -> None:
    await state.catalog.agent_register({"Name": "db", "ID": "db-v2", "Port": 5433,
                                        "Meta": {"version": "v2"},
                                        "Connect": {"SidecarService": {"Port": 21003}}})  # fmt: skip
    for n in (1, 2):
        await state.catalog.update_check(f"service:db-v2-sidecar-proxy:{n}", "passing", "")
    await state.configs.write({"Kind": R, "Name": "db",
                               "Subsets": {"v2": {"Filter": "Service.Meta.version == v2"}}})  # fmt: skip
    gw = collect_inputs(state.snapshot(), "gw")
    assert isinstance(gw, GatewayInputs)
    routes = {s.sni.removesuffix(f".internal.{gw.trust_domain}"): s.endpoints for s in gw.services}
    assert [e.port for e in routes["v2.db.default.dc1"]] == [21003]
    assert sorted(e.port for e in routes["db.default.dc1"]) == [21001, 21003]
