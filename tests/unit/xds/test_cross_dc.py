"""Upstreams in other datacenters and the destination side of cross-datacenter calls.

A dc1 caller reaching dc2 presents ``spiffe://<td>/ns/<ns>/dc/dc1/svc/<svc>``; dc2's RBAC,
built from dc2's intentions, must judge it exactly as it judges a local caller of that name
(Consul's principal regex matches ``dc/[^/]+``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.domain.intentions import Intention, decide
from loom.xds.inputs import AccessRule, Principal
from loom.xds.translate.rbac import rbac_policies
from tests.unit.xds.test_translate import TD, envoy_allows

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
