"""Binding rules: selectors, bind-name templates, and what a login binds.

Cases follow Consul's binding-rule docs and ``agent/consul/authmethod`` (the Kubernetes
variables ``serviceaccount.namespace``/``name``/``uid``; the JWT ``value.``/``list.``
variables; bind names lowercased and checked for their type). The attacker's cases: a claim
that computes an invalid service name (``Web``, ``a/b``, ``../db``) is refused; a login no
rule matches binds nothing and is "Permission denied".
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.acl.binding import BindingRule, BindNameError, bind, interpolate, login_token
from loom.acl.errors import PermissionDenied
from loom.acl.records import AuthMethod, Link, NodeIdentity, ServiceIdentity
from loom.acl.selector import SelectorError, matches, parse_selector
from loom.acl.wire import RecordError

K8S = ("serviceaccount.namespace", "serviceaccount.name", "serviceaccount.uid")
POD = {
    "serviceaccount.namespace": "default",
    "serviceaccount.name": "web",
    "serviceaccount.uid": "u-1",
    "list.groups": ("dev", "ops"),
    "value.empty": "",
    "list.none": (),
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ('serviceaccount.namespace == "default"', True),
        ('serviceaccount.namespace != "default"', False),
        ('serviceaccount.namespace == "default" and serviceaccount.name == "db"', False),
        ('serviceaccount.name == "db" or serviceaccount.name == "web"', True),
        ('not serviceaccount.name == "web"', False),
        ('not (serviceaccount.name == "db" or serviceaccount.uid == "u-2")', True),
        ('"ops" in list.groups', True),
        ('"admin" not in list.groups', True),
        ('list.groups contains "dev"', True),
        ('list.groups not contains "dev"', False),
        ('"ef" in serviceaccount.namespace', True),  # bexpr: "in" a string is a substring test
        ("list.none is empty", True),
        ("value.empty is not empty", False),
        ("serviceaccount.namespace == default", True),  # bexpr accepts unquoted values
        ("serviceaccount.name == `web`", True),
        ('serviceaccount.nam == "web"', False),  # unknown at login: no match, no crash
        ('list.groups == "dev"', False),  # == on a list cannot be evaluated: no match
    ],
)
def test_selectors_evaluate_as_bexpr_does(selector: str, expected: bool) -> None:
    assert matches(parse_selector(selector), POD) is expected


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("serviceaccount.name ==", "column 23: expected a value, found end of selector"),
        ('serviceaccount.name = "x"', "column 21: unexpected '='"),
        ('"x" == serviceaccount.name', "column 1: expected a selector"),
        ('(serviceaccount.name == "x"', "expected ')'"),
        ('serviceaccount.name == "x" and', "expected a selector or a value"),
        ('serviceaccount.name == "x" serviceaccount.uid', "expected 'and', 'or' or the end"),
        ("serviceaccount.name is full", "expected 'empty'"),
        ("serviceaccount.name", "expected an operator"),
    ],
)
def test_a_malformed_selector_is_an_error_naming_the_column(selector: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(selector)
    assert message in str(caught.value)


def test_bind_names_interpolate_lowercased_variables() -> None:
    assert interpolate("${serviceaccount.name}-sa", {"serviceaccount.name": "Web"}) == "web-sa"
    assert interpolate("$${literal}", {}) == "${literal}"
    with pytest.raises(BindNameError, match=r"unknown variable accessed: serviceaccount\.nam"):
        interpolate("${serviceaccount.nam}", {"serviceaccount.name": "web"})
    with pytest.raises(BindNameError, match="unterminated"):
        interpolate("${serviceaccount.name", {"serviceaccount.name": "web"})


def rule(
    bind_type: str = "service",
    bind_name: str = "${serviceaccount.name}",
    selector: str = "",
    method: str = "k8s",
    id: str = "r1",
) -> BindingRule:
    return BindingRule(id, method, bind_type, bind_name, selector)


def test_the_seed_rule_binds_the_service_account_name_as_the_service_identity() -> None:
    rules = [rule(selector='serviceaccount.namespace == "default"')]
    got = bind(rules, method="k8s", vars=POD, datacenter="dc1")
    assert got.service_identities == (ServiceIdentity("web"),)
    assert got.rules == ("r1",)


def test_node_role_and_policy_bindings_need_what_they_name_to_exist() -> None:
    rules = [
        rule("node", "node-${serviceaccount.uid}"),
        rule("role", "ops", id="r2"),
        rule("policy", "missing", id="r3"),
        rule("service", "other", method="jwt", id="r4"),
    ]
    got = bind(rules, method="k8s", vars=POD, datacenter="dc1", known_roles=["ops"])
    assert got.node_identities == (NodeIdentity("node-u-1", "dc1"),)
    assert got.roles == ("ops",) and got.policies == () and got.service_identities == ()


def test_a_login_no_rule_matches_is_permission_denied() -> None:
    rules = [rule(selector='serviceaccount.namespace == "prod"')]
    with pytest.raises(PermissionDenied, match=r"^Permission denied$"):
        bind(rules, method="k8s", vars=POD, datacenter="dc1")


def test_a_computed_name_is_lowercased_as_consul_does() -> None:
    vars = {**POD, "serviceaccount.name": "Web"}
    got = bind([rule()], method="k8s", vars=vars, datacenter="dc1")
    assert got.service_identities == (ServiceIdentity("web"),)


@pytest.mark.parametrize("name", ["a/b", "../db", "web.default", "-web", "", "w" * 257, "wéb"])
def test_a_claim_that_computes_an_invalid_service_name_is_refused(name: str) -> None:
    vars = {**POD, "serviceaccount.name": name}
    with pytest.raises(BindNameError, match="invalid bind name"):
        bind([rule()], method="k8s", vars=vars, datacenter="dc1")


def test_binding_rules_read_consuls_json_and_check_their_variables() -> None:
    doc = {
        "AuthMethod": "k8s",
        "BindType": "service",
        "BindName": "${serviceaccount.name}",
        "Selector": 'serviceaccount.namespace == "default"',
        "Description": "seed",
    }
    parsed = BindingRule.from_json(doc, K8S)
    assert BindingRule.from_json(parsed.to_json(), K8S) == parsed
    for change, field in [
        ({"BindType": "management"}, "BindType"),
        ({"BindName": ""}, "BindName"),
        ({"Selector": "serviceaccount.name =="}, "Selector"),
        ({"Selector": 'serviceaccount.nmae == "x"'}, "Selector"),
        ({"BindName": "${serviceaccount.nmae}"}, "BindName"),
        ({"BindName": "Upper"}, "BindName"),
        ({"Extra": 1}, "Extra"),
        ({"AuthMethod": ""}, "AuthMethod"),
    ]:
        with pytest.raises(RecordError, match=f"field '{field}'"):
            BindingRule.from_json({**doc, **change}, K8S)


FIELDS = ["serviceaccount.name", "serviceaccount.namespace", "list.groups"]


@st.composite
def selectors(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 2 or draw(st.booleans()):
        field = draw(st.sampled_from(FIELDS))
        value = draw(st.text(max_size=6))
        quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return draw(
            st.sampled_from(
                [
                    f"{field} == {quoted}",
                    f"{field} != {quoted}",
                    f"{quoted} in {field}",
                    f"{quoted} not in {field}",
                    f"{field} contains {quoted}",
                    f"{field} is empty",
                    f"{field} is not empty",
                ]
            )
        )
    left, right = draw(selectors(depth + 1)), draw(selectors(depth + 1))
    return draw(st.sampled_from([f"{left} and {right}", f"({left}) or ({right})", f"not ({left})"]))


@settings(max_examples=300, deadline=None, database=None)
@given(selectors())
def test_printed_selectors_parse_back_to_the_same_expression(text: str) -> None:
    expr = parse_selector(text)
    assert parse_selector(str(expr)) == expr


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.text(max_size=40)
    | st.lists(
        st.sampled_from(['"', "(", ")", "==", "and", "not", "in", "x.y", "`"]), max_size=12
    ).map(" ".join)
)
def test_hostile_selectors_parse_or_raise_a_selector_error(text: str) -> None:
    try:
        expr = parse_selector(text)
    except SelectorError:
        return
    matches(expr, POD)


def test_a_login_token_carries_exactly_what_was_bound_and_expires_with_the_method() -> None:
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    method = AuthMethod("k8s", "kubernetes", max_token_ttl=dt.timedelta(minutes=10))
    bound = bind(
        [rule(), rule("role", "ops", id="r2")],
        method="k8s",
        vars=POD,
        datacenter="dc1",
        known_roles=["ops"],
    )
    token = login_token(
        bound, method, accessor_id="acc", secret_id="sec", now=now, meta={"pod": "default/web"}
    )
    assert token.service_identities == (ServiceIdentity("web"),)
    assert token.roles == (Link(name="ops"),) and token.policies == ()
    assert token.description == 'token created via login: {"pod":"default/web"}'
    assert token.local and token.auth_method == "k8s"
    assert token.expiration_time == now + dt.timedelta(minutes=10)
    global_method = AuthMethod("k8s", "kubernetes", token_locality="global")
    assert not login_token(bound, global_method, accessor_id="a", secret_id="s", now=now).local


def test_login_meta_is_written_as_gos_json_marshal_writes_it_and_read_back() -> None:
    from loom.acl.binding import go_json, login_meta

    meta = {"pod": "ns/web-1", "note": "a<b>&c", "name": "café"}
    text = go_json(meta)
    assert text == '{"name":"café","note":"a\\u003cb\\u003e\\u0026c","pod":"ns/web-1"}'
    assert login_meta(f"token created via login: {text}") == meta
    assert login_meta("token created via login") == {}
    assert login_meta('something else: {"pod":"ns/web-1"}') == {}
