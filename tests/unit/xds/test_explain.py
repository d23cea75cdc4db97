"""``explain``: the decision, the intention behind it, the upstream and the generated RBAC.

The core runs on an in-memory store, services and intentions are written as the HTTP API
writes them, and the explanation is read off the same snapshot the xDS server translates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.control.state import ServerSettings, State
from loom.store import Store
from loom.xds.explain import evaluate_rbac, explain
from loom.xds.inputs import AccessRule, Permission, Principal
from loom.xds.translate.rbac import http_rbac_policies, rbac_policies
from tests.unit.xds.test_translate import (
    TD,
    envoy_allows,
    envoy_allows_request,
    names,
    nss,
    permission_lists,
)


@pytest.fixture
async def state() -> AsyncIterator[State]:
    st = State(ServerSettings(), store=Store())
    await st.start()
    try:
        await st.catalog.agent_register(
            {"Name": "api", "Port": 9090, "Connect": {"SidecarService": {"Port": 21000}}}
        )
        await st.catalog.agent_register(
            {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": 21001, "Proxy": {
                "Upstreams": [{"DestinationName": "api", "LocalBindPort": 9191}]}}}}
        )  # fmt: skip
        yield st
    finally:
        await st.close()


async def _intention(state: State, src: str, dst: str, body: dict[str, object]) -> None:
    await state.configs.upsert_exact(src, dst, body)


async def test_without_intentions_the_default_policy_allows_and_the_rbac_agrees(
    state: State,
) -> None:
    got = explain(state.snapshot(), "default", "web", "default", "api")
    assert got.allowed and got.intention is None and got.default_allow
    assert "default policy is allow" in got.reason
    assert [(u.proxy_id, u.kind, u.address) for u in got.upstreams] == [
        ("web-sidecar-proxy", "explicit", "127.0.0.1:9191")
    ]
    assert [(v.proxy_id, v.filter, v.allowed, v.policy, v.agrees) for v in got.rbac] == [
        ("api-sidecar-proxy", "network", True, "default-allow", True)
    ]


async def test_a_deny_intention_decides_and_no_rbac_policy_admits_the_source(
    state: State,
) -> None:
    await _intention(state, "web", "api", {"Action": "deny"})
    got = explain(state.snapshot(), "default", "web", "default", "api")
    assert not got.allowed and got.layer == "L4"
    assert got.intention is not None and got.intention.action == "deny"
    assert got.intention.precedence == 9
    (verdict,) = got.rbac
    assert (verdict.allowed, verdict.policy, verdict.agrees) == (False, "", True)
    assert "default-allow" in verdict.policies  # other sources still get in


async def test_an_exact_allow_over_a_wildcard_deny_names_the_allow_policy(state: State) -> None:
    await _intention(state, "*", "api", {"Action": "deny"})
    await _intention(state, "web", "api", {"Action": "allow"})
    got = explain(state.snapshot(), "default", "web", "default", "api")
    assert got.allowed and got.intention is not None and got.intention.source == "web"
    (verdict,) = got.rbac
    assert verdict.policy.startswith("intention-0-allow-default-web")
    other = explain(state.snapshot(), "default", "batch", "default", "api")
    assert not other.allowed and other.intention is not None and other.intention.source == "*"
    assert other.rbac[0].agrees and not other.rbac[0].allowed


async def test_l7_permissions_are_decided_per_request_by_the_http_rbac(state: State) -> None:
    await state.configs.write({"Kind": "service-defaults", "Name": "api", "Protocol": "http"})
    await _intention(state, "web", "api", {"Permissions": [
        {"Action": "allow", "HTTP": {"PathPrefix": "/public", "Methods": ["GET"]}},
        {"Action": "deny", "HTTP": {"PathPrefix": "/"}}]})  # fmt: skip
    view = state.snapshot()
    ok = explain(view, "default", "web", "default", "api", "GET", "/public/x")
    assert ok.allowed and ok.layer == "L7"
    assert [(v.filter, v.allowed, v.agrees) for v in ok.rbac] == [("http", True, True)]
    post = explain(view, "default", "web", "default", "api", "POST", "/public/x")
    assert not post.allowed and "matched permission 1" in post.reason
    assert [(v.filter, v.allowed, v.agrees) for v in post.rbac] == [("http", False, True)]
    bare = explain(view, "default", "web", "default", "api")
    assert bare.allowed and bare.layer == "L4"
    assert any("give a method and path" in n for n in bare.notes)


async def test_a_source_without_a_route_and_a_destination_without_a_sidecar_are_noted(
    state: State,
) -> None:
    await state.catalog.agent_register({"Name": "legacy", "Port": 7000})
    got = explain(state.snapshot(), "default", "api", "default", "legacy")
    assert [u.kind for u in got.upstreams] == [""]
    assert got.rbac == ()
    assert any("has no sidecar: nothing enforces" in n for n in got.notes)
    assert any("no sidecar of api has legacy as an upstream" in n for n in got.notes)
    none = explain(state.snapshot(), "default", "legacy", "default", "api")
    assert none.upstreams == () and any("legacy has no sidecar" in n for n in none.notes)


async def test_a_transparent_sidecar_reaches_every_meshed_service(state: State) -> None:
    await state.catalog.agent_register(
        {"Name": "tp", "Port": 8000, "Connect": {"SidecarService": {"Port": 21005,
         "Proxy": {"Mode": "transparent"}}}}
    )  # fmt: skip
    got = explain(state.snapshot(), "default", "tp", "default", "api")
    assert [u.kind for u in got.upstreams] == ["transparent"]


def test_rbac_evaluation_follows_envoys_matchers() -> None:
    rules = {
        "action": "ALLOW",
        "policies": {
            "p": {
                "principals": [{"and_ids": {"ids": [{"any": True}, {"not_id": {
                    "authenticated": {"principal_name": {"safe_regex": {"regex": "^a$"}}}}}]}}],
                "permissions": [{"and_rules": {"rules": [
                    {"url_path": {"path": {"prefix": "/x"}}},
                    {"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}}],
            }
        },
    }  # fmt: skip
    assert evaluate_rbac(rules, "b", {":method": "GET", ":path": "/x?q=1"}) == "p"
    assert evaluate_rbac(rules, "a", {":method": "GET", ":path": "/x"}) is None
    assert evaluate_rbac(rules, "b", {":method": "PUT", ":path": "/x"}) is None
    assert evaluate_rbac(rules, "b", {":method": "GET", ":path": "/y"}) is None


# -- the explain evaluator against the translator tests' own reading of Envoy's RBAC -----------


@settings(max_examples=200, deadline=None)
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
def test_the_explain_evaluator_reads_generated_rbac_as_the_translator_tests_do(
    rules: list[tuple[str, str, Any]], default_allow: bool, src: tuple[str, str], method: str,
    path: str,
) -> None:  # fmt: skip
    access = tuple(
        AccessRule(Principal(ns, name), what != "deny")
        if isinstance(what, str)
        else AccessRule(
            Principal(ns, name), True, tuple(Permission(p.action == "allow", p.http) for p in what)
        )
        for ns, name, what in rules
    )
    uri = f"spiffe://{TD}/ns/{src[0]}/dc/dc1/svc/{src[1]}"
    network = rbac_policies(TD, access, default_allow)
    assert (evaluate_rbac(network, uri, {}) is not None) == envoy_allows(network, uri)
    http = http_rbac_policies(TD, access, default_allow)
    headers = {":method": method, ":path": path}
    assert (evaluate_rbac(http, uri, headers) is not None) == envoy_allows_request(
        http, uri, method, path
    )
