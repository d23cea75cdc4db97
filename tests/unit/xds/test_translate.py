"""Golden files for generated Envoy resources, plus behaviour checks over them."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.domain.entries import HttpMatch, IntentionPermission
from loom.domain.intentions import Intention, decide, decide_request
from loom.xds.inputs import (
    AccessRule,
    Endpoint,
    ExposeListener,
    ExternalHost,
    Permission,
    Principal,
    ProxyInputs,
    Upstream,
)
from loom.xds.resources import Converter
from loom.xds.translate import InconsistentSnapshot, build_resources, check_consistency
from loom.xds.translate.names import (
    ADS,
    AGENT_SDS,
    TYPE_CLUSTER,
    TYPE_ENDPOINTS,
    TYPE_LISTENER,
    TYPE_SECRET,
)
from loom.xds.translate.rbac import http_rbac_policies, rbac_policies

TD = "11111111-2222-3333-4444-555555555555.consul"


def upstream(name: str, **kw) -> Upstream:  # type: ignore[no-untyped-def]
    return Upstream(
        service=name, namespace="default", datacenter="dc1",
        spiffe_id=f"spiffe://{TD}/ns/default/dc/dc1/svc/{name}",
        sni=f"{name}.default.dc1.internal.{TD}", **kw,
    )  # fmt: skip


BASE = ProxyInputs(
    proxy_id="static-client-sidecar-proxy", service="static-client", namespace="default",
    datacenter="dc1", trust_domain=TD, public_address="0.0.0.0", public_port=20000,
    local_app_address="127.0.0.1", local_app_port=8080, protocol="tcp", mtls_mode="strict",
    rules=(), default_allow=True,
)  # fmt: skip

CASES = {
    "explicit_upstream": replace(
        BASE,
        upstreams=(upstream("static-server", endpoints=(Endpoint("127.0.0.1", 21000),
                                                        Endpoint("10.0.0.2", 20000)),
                            bind_address="127.0.0.1", bind_port=1234),),
    ),
    "intentions_deny_default": replace(
        BASE, default_allow=False,
        rules=(AccessRule(Principal("default", "web"), False),
               AccessRule(Principal("default", "*"), True)),
    ),
    "permissive": replace(BASE, mtls_mode="permissive"),
    "transparent": replace(
        BASE, transparent=True,
        upstreams=(
            upstream("static-server", endpoints=(Endpoint("10.244.0.3", 20000),),
                     virtual_ips=("240.0.0.1",), ports=(8080,), instance_ips=("10.244.0.3",)),
            upstream("web", endpoints=(Endpoint("10.244.0.4", 20000),),
                     virtual_ips=("240.0.0.2", "10.96.0.10"), ports=(8080,), instance_ips=("10.244.0.4",)),
            upstream("web-admin", endpoints=(Endpoint("10.244.0.4", 20001),),
                     virtual_ips=("240.0.0.3",), ports=(9090,), instance_ips=("10.244.0.4",)),
            upstream("db", endpoints=(Endpoint("10.244.0.5", 20000),), ports=(5432,),
                     instance_ips=("10.244.0.5", "10.244.0.6"), headless=True),
        ),
        externals=(ExternalHost("mysql-instance1.example.com", "db1", "default", ("240.240.0.1", "fd00:f0f0::1"), (3306,)),),
    ),
    "mesh_destinations_only": replace(BASE, transparent=True, mesh_destinations_only=True),
    "l7_http": replace(
        BASE, protocol="http",
        rules=(
            AccessRule(Principal("default", "web"), True, (
                Permission(False, HttpMatch(path_prefix="/admin")),
                Permission(True, HttpMatch(path_prefix="/", methods=("GET", "HEAD"))),
            )),
            AccessRule(Principal("default", "*"), False),
        ),
    ),
    "expose_probes": replace(BASE, expose=(ExposeListener(20300, "/healthz", 8080),
                                           ExposeListener(20400, "/ready", 8080))),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_resources_match_the_golden_files(case: str, golden) -> None:  # type: ignore[no-untyped-def]
    res = build_resources(CASES[case])
    golden.check(f"xds/{case}.json", json.dumps(res, indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_generated_resource_parses_as_an_envoy_message(case: str) -> None:
    served = Converter().serve(build_resources(CASES[case]))
    assert all(s.message.ByteSize() > 0 for named in served.values() for s in named.values())


def _route_local(res, port: int) -> str:  # type: ignore[no-untyped-def]
    """Simulates a connection to 127.0.0.1:port: which cluster does it reach?"""
    for lst in res[TYPE_LISTENER].values():
        addr = lst["address"]["socket_address"]
        if addr["port_value"] == port and addr["address"] in ("127.0.0.1", "0.0.0.0"):
            chain = lst["filter_chains"][0]
            return chain["filters"][-1]["typed_config"]["cluster"]
    raise AssertionError(f"no listener on port {port}")


def _route_outbound(res, ip: str, port: int) -> str:  # type: ignore[no-untyped-def]
    """Envoy's filter-chain selection on the outbound listener for ip:port: chains naming the
    port win over portless ones before any address is looked at; then the address must match."""
    (lst,) = [v for k, v in res[TYPE_LISTENER].items() if k.startswith("outbound_listener")]
    chains = lst["filter_chains"]
    by_port = [c for c in chains if c["filter_chain_match"].get("destination_port") == port]
    candidates = by_port or [c for c in chains if "destination_port" not in c["filter_chain_match"]]
    hits = [
        c
        for c in candidates
        if any(p["address_prefix"] == ip for p in c["filter_chain_match"]["prefix_ranges"])
    ]
    chain = hits[0] if hits else lst.get("default_filter_chain")
    if chain is None:
        return "<closed>"
    return chain["filters"][-1]["typed_config"]["cluster"]


def test_a_call_to_the_upstream_port_reaches_the_upstream_cluster_and_its_endpoints() -> None:
    res = build_resources(CASES["explicit_upstream"])
    cluster = _route_local(res, 1234)
    assert cluster == f"static-server.default.dc1.internal.{TD}"
    lbs = res[TYPE_ENDPOINTS][cluster]["endpoints"][0]["lb_endpoints"]
    assert {(e["endpoint"]["address"]["socket_address"]["address"],
             e["endpoint"]["address"]["socket_address"]["port_value"]) for e in lbs} == {
        ("127.0.0.1", 21000), ("10.0.0.2", 20000)}  # fmt: skip
    tls = res[TYPE_CLUSTER][cluster]["transport_socket"]["typed_config"]
    sans = tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
    assert sans["match_typed_subject_alt_names"][0]["matcher"]["exact"].endswith(
        "/svc/static-server"
    )


def test_a_call_to_the_public_port_reaches_the_local_app() -> None:
    assert _route_local(build_resources(BASE), 20000) == "local_app"


def test_transparent_calls_are_routed_by_original_destination() -> None:
    res = build_resources(CASES["transparent"])
    sni = f".default.dc1.internal.{TD}"
    assert _route_outbound(res, "240.0.0.1", 80) == "static-server" + sni
    assert _route_outbound(res, "240.0.0.1", 8080) == "static-server" + sni
    assert _route_outbound(res, "240.0.0.2", 9090) == "web" + sni
    assert _route_outbound(res, "10.96.0.10", 80) == "web" + sni
    assert _route_outbound(res, "10.244.0.4", 8080) == "web" + sni
    assert _route_outbound(res, "10.244.0.4", 9090) == "web-admin" + sni
    assert _route_outbound(res, "10.244.0.6", 5432) == "db" + sni
    assert _route_outbound(res, "240.240.0.1", 3306) == "external:mysql-instance1.example.com:3306"
    assert _route_outbound(res, "93.184.216.34", 443) == "original-destination"
    only = build_resources(CASES["mesh_destinations_only"])
    assert _route_outbound(only, "93.184.216.34", 443) == "<closed>"
    assert "original-destination" not in only[TYPE_CLUSTER]


def test_an_inconsistent_snapshot_is_refused() -> None:
    res = build_resources(CASES["explicit_upstream"])
    del res[TYPE_ENDPOINTS][next(iter(res[TYPE_ENDPOINTS]))]
    with pytest.raises(InconsistentSnapshot):
        check_consistency(res)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_server_serves_no_secret_and_every_tls_context_reads_the_agents_sds(case: str) -> None:
    res = build_resources(CASES[case])
    assert res[TYPE_SECRET] == {}
    text = json.dumps(res)
    assert "PRIVATE KEY" not in text and "inline_string" not in text
    assert text.count('"cluster_name": "loom_agent_sds"') >= 2


def test_a_secret_served_by_the_server_is_refused() -> None:
    res = build_resources(BASE)
    res[TYPE_SECRET] = {"leaf": {"name": "leaf"}}
    with pytest.raises(InconsistentSnapshot, match="must serve no secret"):
        check_consistency(res)


def test_a_secret_read_over_ads_or_unknown_to_the_agent_is_refused() -> None:
    for old, new in ((json.dumps(AGENT_SDS), json.dumps(ADS)), ('"roots"', '"other"')):
        res = json.loads(json.dumps(build_resources(BASE)).replace(old, new))
        with pytest.raises(InconsistentSnapshot):
            check_consistency(res)


# -- RBAC semantics: Envoy's evaluation of our policies equals decide() ---------------------------


def _matches(principal: dict, uri: str) -> bool:  # type: ignore[type-arg]
    if principal.get("any"):
        return True
    if "authenticated" in principal:
        return (
            re.fullmatch(principal["authenticated"]["principal_name"]["safe_regex"]["regex"], uri)
            is not None
        )
    if "and_ids" in principal:
        return all(_matches(p, uri) for p in principal["and_ids"]["ids"])
    if "or_ids" in principal:
        return any(_matches(p, uri) for p in principal["or_ids"]["ids"])
    if "not_id" in principal:
        return not _matches(principal["not_id"], uri)
    raise AssertionError(principal)


def envoy_allows(policy: dict, uri: str) -> bool:  # type: ignore[type-arg]
    """Envoy's ALLOW action: allowed iff some policy has a matching principal."""
    return any(_matches(p, uri) for pol in policy["policies"].values() for p in pol["principals"])


names = st.sampled_from(["web", "api", "*"])
nss = st.sampled_from(["default", "team", "*"])


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(
        st.tuples(nss, names, st.booleans()), max_size=5, unique_by=lambda r: (r[0], r[1])
    ),
    default_allow=st.booleans(),
    src=st.tuples(st.sampled_from(["default", "team"]), st.sampled_from(["web", "api", "db"])),
)
def test_envoy_rbac_built_from_intentions_decides_like_the_intention_check(
    rules, default_allow, src
) -> None:  # type: ignore[no-untyped-def]
    intentions = [
        Intention(ns, name, "default", "db", "allow" if allow else "deny")
        for ns, name, allow in rules
    ]
    ordered = sorted(intentions, key=lambda i: (-i.precedence, i.source_ns, i.source))
    access = tuple(
        AccessRule(Principal(i.source_ns, i.source), i.action == "allow") for i in ordered
    )
    policy = rbac_policies(TD, access, default_allow)
    uri = f"spiffe://{TD}/ns/{src[0]}/dc/dc1/svc/{src[1]}"
    expected = decide(intentions, src[0], src[1], "default", "db", default_allow).allowed
    assert envoy_allows(policy, uri) == expected


def test_an_exposed_probe_path_reaches_the_app_over_plain_http() -> None:
    res = build_resources(CASES["expose_probes"])
    lst = res[TYPE_LISTENER]["exposed_path_listener:0.0.0.0:20300"]
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert route == {"match": {"path": "/healthz"}, "route": {"cluster": "exposed_cluster_8080"}}
    assert "transport_socket" not in lst["filter_chains"][0]


# -- L7: Envoy's HTTP RBAC evaluation of our policies equals decide_request() ---------------------


def _perm_matches(perm: dict, method: str, path: str) -> bool:  # type: ignore[type-arg]
    if perm.get("any"):
        return True
    if "and_rules" in perm:
        return all(_perm_matches(p, method, path) for p in perm["and_rules"]["rules"])
    if "or_rules" in perm:
        return any(_perm_matches(p, method, path) for p in perm["or_rules"]["rules"])
    if "not_rule" in perm:
        return not _perm_matches(perm["not_rule"], method, path)
    if "url_path" in perm:
        m = perm["url_path"]["path"]
        if "exact" in m:
            return path == m["exact"]
        if "prefix" in m:
            return path.startswith(m["prefix"])
        return re.fullmatch(m["safe_regex"]["regex"], path) is not None
    if "header" in perm and perm["header"]["name"] == ":method":
        return method == perm["header"]["string_match"]["exact"]
    raise AssertionError(perm)


def envoy_allows_request(policy: dict, uri: str, method: str, path: str) -> bool:  # type: ignore[type-arg]
    return any(
        any(_matches(p, uri) for p in pol["principals"])
        and any(_perm_matches(q, method, path) for q in pol["permissions"])
        for pol in policy["policies"].values()
    )


http_blocks = st.builds(
    HttpMatch,
    path_prefix=st.one_of(st.none(), st.sampled_from(["/", "/admin", "/api"])),
    path_exact=st.one_of(st.none(), st.sampled_from(["/api/v1", "/admin"])),
    methods=st.one_of(
        st.just(()),
        st.lists(st.sampled_from(["GET", "POST"]), min_size=1, max_size=2, unique=True).map(tuple),
    ),
)
permission_lists = st.lists(
    st.builds(IntentionPermission, st.sampled_from(["allow", "deny"]), http_blocks),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(
        st.tuples(nss, names, st.one_of(st.sampled_from(["allow", "deny"]), permission_lists)),
        max_size=4,
        unique_by=lambda r: (r[0], r[1]),
    ),
    default_allow=st.booleans(),
    src=st.tuples(st.sampled_from(["default", "team"]), st.sampled_from(["web", "api"])),
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/", "/admin", "/admin/x", "/api/v1", "/api/v2"]),
)
def test_envoy_http_rbac_decides_each_request_like_the_l7_intention_check(
    rules, default_allow, src, method, path
) -> None:  # type: ignore[no-untyped-def]
    intentions = [
        Intention(ns, name, "default", "db", what, ())
        if isinstance(what, str)
        else Intention(ns, name, "default", "db", "", tuple(what))
        for ns, name, what in rules
    ]
    ordered = sorted(intentions, key=lambda i: (-i.precedence, i.source_ns, i.source))
    access = tuple(
        AccessRule(
            Principal(i.source_ns, i.source),
            i.action != "deny",
            tuple(
                Permission(p.action == "allow", p.http)
                for p in i.permissions
            ),
        )
        for i in ordered
    )
    policy = http_rbac_policies(TD, access, default_allow)
    uri = f"spiffe://{TD}/ns/{src[0]}/dc/dc1/svc/{src[1]}"
    expected = decide_request(
        intentions, src[0], src[1], "default", "db", default_allow, method, path
    ).allowed
    assert envoy_allows_request(policy, uri, method, path) == expected
