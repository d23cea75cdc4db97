"""``service-resolver`` entries in a proxy's upstreams and their Envoy resources: a redirect
replaces the target, a subset dials only the sidecars of the instances its filter keeps
(under Consul's ``<subset>.<svc>...`` cluster name), ``ConnectTimeout`` reaches the cluster,
and failover is an aggregate cluster over one EDS cluster per target, whose primary goes
empty when every primary instance is critical."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from loom.control.state import ServerSettings, State
from loom.store import Store
from loom.xds.errors import InconsistentSnapshot
from loom.xds.inputs import Endpoint, Upstream
from loom.xds.resources import Converter
from loom.xds.translate import build_resources, check_consistency
from loom.xds.translate.names import TYPE_CLUSTER, TYPE_ENDPOINTS
from loom.xds.view import collect_inputs

R = "service-resolver"
AGGREGATE = "envoy.clusters.aggregate"


async def _instance(st: State, name: str, sid: str, port: int, **extra: Any) -> None:
    await st.catalog.agent_register(
        {"Name": name, "ID": sid, "Port": port, "Connect": {"SidecarService": {"Port": port + 100}},
         **extra}
    )  # fmt: skip
    for n in (1, 2):  # the sidecar's default checks: critical until its Envoy listens
        await st.catalog.update_check(f"service:{sid}-sidecar-proxy:{n}", "passing", "")


@pytest.fixture
async def state() -> AsyncIterator[State]:
    st = State(ServerSettings(), store=Store())
    await st.start()
    try:
        await _instance(st, "web", "web-1", 5001, Meta={"version": "v1"})
        await _instance(st, "web", "web-2", 5002, Meta={"version": "v2"},
                        Check={"CheckID": "web-2-alive", "TTL": "30s", "Status": "passing"})  # fmt: skip
        await _instance(st, "api", "api-1", 5003)
        await _instance(st, "backup", "backup-1", 5004)
        upstream = {"DestinationName": "web", "LocalBindPort": 9191}
        await st.catalog.agent_register(
            {"Name": "client", "Port": 8080,
             "Connect": {"SidecarService": {"Port": 8180, "Proxy": {"Upstreams": [upstream]}}}}
        )  # fmt: skip
        yield st
    finally:
        await st.close()


def _web(state: State) -> Upstream:
    found = collect_inputs(state.snapshot(), "client-sidecar-proxy")
    assert found is not None
    [up] = [u for u in found.upstreams if u.bind_port == 9191]
    return up


def _resources(state: State) -> dict[str, dict[str, Any]]:
    found = collect_inputs(state.snapshot(), "client-sidecar-proxy")
    assert found is not None
    return build_resources(found)


def _ports(endpoints: tuple[Endpoint, ...]) -> set[int]:
    return {e.port for e in endpoints}


async def test_without_a_resolver_the_upstream_dials_every_healthy_sidecar(state: State) -> None:
    up = _web(state)
    assert up.sni.startswith("web.default.dc1.internal.")
    assert (_ports(up.endpoints), up.failover, up.connect_timeout_ms) == ({5101, 5102}, (), 5000)


async def test_a_redirect_sends_the_upstream_to_the_other_service(state: State) -> None:
    await state.configs.write({"Kind": R, "Name": "web", "Redirect": {"Service": "api"}})
    up = _web(state)
    assert (up.service, _ports(up.endpoints)) == ("web", {5103})  # still the web listener
    assert up.sni.startswith("api.default.dc1.internal.")
    assert up.spiffe_id.endswith("/ns/default/dc/dc1/svc/api")
    tls = _resources(state)[TYPE_CLUSTER][up.sni]["transport_socket"]["typed_config"]
    assert tls["sni"] == up.sni
    san = tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
    assert san["match_typed_subject_alt_names"][0]["matcher"]["exact"] == up.spiffe_id


async def test_a_subset_dials_only_the_instances_its_filter_keeps(state: State) -> None:
    await state.configs.write(
        {"Kind": R, "Name": "web", "DefaultSubset": "v2", "ConnectTimeout": "2500ms",
         "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                     "v2": {"Filter": "Service.Meta.version == v2"}}}
    )  # fmt: skip
    up = _web(state)
    assert up.sni.startswith("v2.web.default.dc1.internal.")
    assert up.spiffe_id.endswith("/svc/web")
    assert (_ports(up.endpoints), up.connect_timeout_ms) == ({5102}, 2500)
    res = _resources(state)
    assert res[TYPE_CLUSTER][up.sni]["connect_timeout"] == "2.500s"
    assert res[TYPE_CLUSTER][up.sni]["transport_socket"]["typed_config"]["sni"] == up.sni
    [lb] = res[TYPE_ENDPOINTS][up.sni]["endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in lb["lb_endpoints"]] == [5102]


async def test_only_passing_leaves_out_instances_with_a_warning(state: State) -> None:
    await state.configs.write(
        {"Kind": R, "Name": "web", "DefaultSubset": "all",
         "Subsets": {"all": {"Filter": "", "OnlyPassing": True}}}
    )  # fmt: skip
    assert _ports(_web(state).endpoints) == {5101, 5102}
    await state.catalog.update_check("web-2-alive", "warning", "slow")
    assert _ports(_web(state).endpoints) == {5101}


async def test_failover_is_an_aggregate_over_the_primary_then_its_targets(state: State) -> None:
    await state.configs.write(
        {"Kind": R, "Name": "web", "DefaultSubset": "v2",
         "Subsets": {"v2": {"Filter": "Service.Meta.version == v2"}},
         "Failover": {"*": {"Service": "backup"}}}
    )  # fmt: skip
    up = _web(state)
    assert [(f.sni.split(".")[0], _ports(f.endpoints)) for f in up.failover] == [("backup", {5104})]
    res = _resources(state)
    agg = res[TYPE_CLUSTER][up.sni]
    assert agg["cluster_type"]["name"] == AGGREGATE
    members = agg["cluster_type"]["typed_config"]["clusters"]
    assert members == [f"failover-target~0~{up.sni}", f"failover-target~1~{up.sni}"]
    primary, backup = (res[TYPE_CLUSTER][m] for m in members)
    assert primary["transport_socket"]["typed_config"]["sni"] == up.sni
    assert backup["transport_socket"]["typed_config"]["sni"] == up.failover[0].sni
    assert "web" not in backup["transport_socket"]["typed_config"]["common_tls_context"][
        "combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"][0]["matcher"]["exact"]  # fmt: skip
    assert set(res[TYPE_ENDPOINTS]) >= set(members) and up.sni not in res[TYPE_ENDPOINTS]
    assert up.sni in Converter().serve(res)[TYPE_CLUSTER]  # the aggregate's type is known
    # Every primary instance critical: the primary's EDS empties, the backup's stays.
    await state.catalog.update_check("web-2-alive", "critical", "down")
    res = _resources(state)
    assert res[TYPE_ENDPOINTS][members[0]]["endpoints"] == []
    assert res[TYPE_ENDPOINTS][members[1]]["endpoints"] != []
    await state.catalog.update_check("web-2-alive", "passing", "")
    assert _ports(_web(state).endpoints) == {5102}


async def test_consistency_sees_an_aggregates_member_clusters(state: State) -> None:
    await state.configs.write(
        {"Kind": R, "Name": "web", "Failover": {"*": {"Service": "backup"}}}
    )
    res = _resources(state)
    [member] = [n for n in res[TYPE_CLUSTER] if n.startswith("failover-target~1~")]
    del res[TYPE_CLUSTER][member]
    del res[TYPE_ENDPOINTS][member]
    with pytest.raises(InconsistentSnapshot, match="undefined clusters"):
        check_consistency(res)


async def test_a_subset_no_instance_matches_has_no_endpoints(state: State) -> None:
    await state.configs.write(
        {"Kind": R, "Name": "web", "DefaultSubset": "v9",
         "Subsets": {"v9": {"Filter": "Service.Meta.version == v9"}}}
    )  # fmt: skip
    up = _web(state)
    assert up.endpoints == ()
    assert _resources(state)[TYPE_ENDPOINTS][up.sni]["endpoints"] == []
