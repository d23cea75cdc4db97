"""ACL records in Consul's JSON shapes, identities' synthesized policies, token resolution.

Shapes follow Consul's HTTP API docs (ACL tokens, policies, roles, auth methods) and
``agent/structs/acl.go`` for the service and node identity templates. The attacker's cases
sit next to the user's: unknown fields and invalid names are refused naming the field; an
expired token, or a secret nobody holds, resolves to "ACL not found".
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.acl.errors import AclError, AclNotFound
from loom.acl.records import (
    ANONYMOUS,
    GLOBAL_MANAGEMENT_ID,
    AuthMethod,
    Link,
    NodeIdentity,
    Policy,
    Role,
    ServiceIdentity,
    Token,
    find_token,
    resolve,
    synthesized_node_policy,
    synthesized_policy,
    token_policies,
)
from loom.acl.wire import RecordError, format_time, parse_duration, parse_time

FIELD_NAMES = [
    "AccessorID",
    "SecretID",
    "Name",
    "Rules",
    "ID",
    "Policies",
    "Roles",
    "ServiceIdentities",
    "ServiceName",
    "NodeIdentities",
    "NodeName",
    "Datacenter",
    "Datacenters",
    "Local",
    "Type",
    "ExpirationTime",
    "ExpirationTTL",
    "MaxTokenTTL",
    "Config",
    "Description",
    "TokenLocality",
]
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

TOKEN_JSON = {
    "AccessorID": "6a1253d2-1785-24fd-91c2-f8e78c745511",
    "SecretID": "45a3bd52-07c7-47a4-52fd-0745e0cfe967",
    "Description": "agent token",
    "Policies": [{"ID": "165d4317-e379-f732-ce70-86278c4558f7", "Name": "node-read"}],
    "Roles": [{"ID": "", "Name": "ops"}],
    "ServiceIdentities": [{"ServiceName": "web", "Datacenters": ["dc1"]}],
    "NodeIdentities": [{"NodeName": "node-1", "Datacenter": "dc2"}],
    "Local": False,
    "ExpirationTime": "2026-12-02T12:00:00.123456789Z",
    "CreateTime": "2026-12-01T10:00:00Z",
    "Hash": "UuiRkOQPRCvo0Ja1aTXZZKfHwxsH5FWfr3+1U0SyHTE=",
    "CreateIndex": 59,
    "ModifyIndex": 59,
}


def test_a_token_reads_and_writes_consuls_json_shape() -> None:
    token = Token.from_json(TOKEN_JSON)
    assert token.service_identities == (ServiceIdentity("web", ("dc1",)),)
    assert token.node_identities == (NodeIdentity("node-1", "dc2"),)
    assert token.expiration_time == dt.datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=dt.UTC)
    out = token.to_json()
    assert out["ExpirationTime"] == "2026-12-02T12:00:00.123456Z"
    assert Token.from_json(out) == token


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Polices": []}, "field 'Polices': unknown field"),
        ({"Local": "yes"}, "field 'Local': expected true or false"),
        ({"Policies": [{"ID": 3}]}, "field 'Policies[0].ID': expected a string"),
        ({"Policies": [{}]}, "field 'Policies[0].': a link needs an ID or a Name"),
        (
            {"ServiceIdentities": [{"ServiceName": "Web"}]},
            "field 'ServiceIdentities[0].ServiceName': Service identity 'Web' has an invalid name",
        ),
        ({"ServiceIdentities": [{"ServiceName": "web/../db"}]}, "invalid name"),
        ({"ServiceIdentities": [{"ServiceName": "-web"}]}, "invalid name"),
        ({"ServiceIdentities": [{"ServiceName": "w" * 257}]}, "invalid name"),
        ({"ServiceIdentities": [{}]}, "missing the service name"),
        (
            {"NodeIdentities": [{"NodeName": "n"}]},
            "field 'NodeIdentities[0].Datacenter': Node identity is missing the datacenter",
        ),
        (
            {"ExpirationTime": "tomorrow"},
            "field 'ExpirationTime': 'tomorrow' is not an RFC 3339 time",
        ),
        ({"ExpirationTTL": "1h"}, "cannot both be set"),
        ({"Namespace": "team-a"}, "field 'Namespace': namespaces and partitions are not supported"),
        ({"Local": True}, "a local token's service identity cannot list datacenters"),
    ],
)
def test_a_bad_token_field_is_refused_by_name(change: dict[str, object], message: str) -> None:
    with pytest.raises(RecordError) as caught:
        Token.from_json({**TOKEN_JSON, **change})
    assert message in str(caught.value)


def test_a_policy_with_bad_rules_or_name_is_refused() -> None:
    ok = Policy.from_json({"Name": "web-write", "Rules": 'service "web" { policy = "write" }'})
    assert ok.parsed.segments[0].name == "web"
    with pytest.raises(RecordError, match=r"field 'Rules': Invalid service \"web\""):
        Policy.from_json({"Name": "p", "Rules": 'service "web" { policy = "all" }'})
    with pytest.raises(RecordError, match="field 'Name'"):
        Policy.from_json({"Name": "has space", "Rules": ""})
    with pytest.raises(RecordError, match="field 'Name'"):
        Policy.from_json({"Name": "x" * 129})


def test_roles_and_auth_methods_validate_their_names_and_types() -> None:
    role = Role.from_json(
        {
            "Name": "ops",
            "Policies": [{"Name": "node-read"}],
            "ServiceIdentities": [{"ServiceName": "api"}],
        }
    )
    assert Role.from_json(role.to_json()) == role
    with pytest.raises(RecordError, match="field 'Name'"):
        Role.from_json({"Name": "a/b"})
    method = AuthMethod.from_json(
        {
            "Name": "minikube",
            "Type": "kubernetes",
            "MaxTokenTTL": "1h30m",
            "Config": {"Host": "https://k8s"},
        }
    )
    assert method.max_token_ttl == dt.timedelta(hours=1, minutes=30)
    assert method.to_json()["MaxTokenTTL"] == "1h30m0s"
    with pytest.raises(RecordError, match="field 'Type'"):
        AuthMethod.from_json({"Name": "m", "Type": "oidc"})
    with pytest.raises(RecordError, match="field 'MaxTokenTTL'"):
        AuthMethod.from_json({"Name": "m", "Type": "jwt", "MaxTokenTTL": "forever"})


def test_a_service_identity_grants_write_on_the_service_and_its_sidecar_and_read_on_all() -> None:
    policy = synthesized_policy(ServiceIdentity("web"))
    a = resolve(
        Token("acc", "sec", service_identities=(ServiceIdentity("web"),)),
        policies={},
        roles={},
        datacenter="dc1",
        default_allow=False,
        now=NOW,
    )
    assert policy.name.startswith("synthetic-policy-")
    assert a.service_write("web") and a.service_write("web-sidecar-proxy")
    assert not a.service_write("db") and not a.service_write("web2")
    assert a.service_read("db") and a.node_read("any-node") and not a.node_write("any-node")
    assert a.intention_read("web") and not a.intention_write("web")


def test_a_node_identity_grants_write_on_its_node_only_in_its_datacenter() -> None:
    ident = NodeIdentity("node-1", "dc1")
    assert synthesized_node_policy(ident).datacenters == ("dc1",)
    token = Token("acc", "sec", node_identities=(ident,))
    here = resolve(token, policies={}, roles={}, datacenter="dc1", default_allow=False, now=NOW)
    there = resolve(token, policies={}, roles={}, datacenter="dc2", default_allow=False, now=NOW)
    assert here.node_write("node-1") and here.service_read("x") and not here.node_write("node-2")
    assert not there.node_write("node-1")


def test_a_token_collects_its_roles_policies_and_skips_dangling_links() -> None:
    node_read = Policy("p1", "node-read", 'node_prefix "" { policy = "read" }')
    dc2_only = Policy("p2", "dc2-only", 'operator = "write"', datacenters=("dc2",))
    role = Role("r1", "ops", policies=(Link("p2"),), service_identities=(ServiceIdentity("api"),))
    token = Token(
        "acc", "sec", policies=(Link(name="node-read"), Link("gone")), roles=(Link(name="ops"),)
    )
    chosen = token_policies(
        token, policies={"p1": node_read, "p2": dc2_only}, roles={"r1": role}, datacenter="dc1"
    )
    assert [p.name for p in chosen][:1] == ["node-read"]
    assert len(chosen) == 2  # node-read + api's synthesized policy; dc2-only is out of scope
    a = resolve(
        token,
        policies={"p1": node_read, "p2": dc2_only},
        roles={"r1": role},
        datacenter="dc2",
        default_allow=False,
        now=NOW,
    )
    assert a.operator_write() and a.service_write("api") and a.node_read("n")


def test_the_management_policy_is_known_by_its_builtin_id() -> None:
    token = Token("acc", "sec", policies=(Link(GLOBAL_MANAGEMENT_ID),))
    a = resolve(token, policies={}, roles={}, datacenter="dc1", default_allow=False, now=NOW)
    assert a.acl_write() and a.service_write("anything")


def test_no_secret_is_the_anonymous_token_and_an_unknown_or_expired_one_is_not_found() -> None:
    live = Token("a1", "s1", expiration_time=NOW + dt.timedelta(seconds=1))
    dead = Token("a2", "s2", expiration_time=NOW)
    assert find_token("", [live, dead], NOW) is ANONYMOUS
    assert find_token("s1", [live, dead], NOW) is live
    with pytest.raises(AclNotFound, match=r"^ACL not found$"):
        find_token("s2", [live, dead], NOW)
    with pytest.raises(AclNotFound):
        find_token("guess", [live, dead], NOW)
    with pytest.raises(AclNotFound):
        resolve(dead, policies={}, roles={}, datacenter="dc1", default_allow=True, now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00Z", dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)),
        ("2026-12-01T12:00:00+02:00", dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)),
        ("2026-12-01T10:00:00.5Z", dt.datetime(2026, 12, 1, 10, 0, 0, 500000, tzinfo=dt.UTC)),
    ],
)
def test_times_are_read_as_go_writes_them(text: str, expected: dt.datetime) -> None:
    assert parse_time(text) == expected
    assert parse_time(format_time(expected)) == expected


@pytest.mark.parametrize("bad", ["2026-12-01", "2026-13-01T00:00:00Z", "2026-12-01T10:00:00", "x"])
def test_malformed_times_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_time(bad)


def test_durations_are_read_as_go_writes_them() -> None:
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("1.5s") == dt.timedelta(seconds=1.5)
    assert parse_duration("0") == dt.timedelta(0)
    assert parse_duration("-1s") == dt.timedelta(seconds=-1)
    for bad in ["", "1", "1d", "-", "h", "1h-1m"]:
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_new_tokens_expiry_follows_consuls_bounds() -> None:
    ttl = Token("acc", "sec", expiration_ttl=dt.timedelta(hours=1)).with_expiration(NOW)
    assert ttl.expiration_time == NOW + dt.timedelta(hours=1) and ttl.create_time == NOW
    assert Token("acc", "sec").with_expiration(NOW).expiration_time is None
    for bad, message in [
        (Token("a", "s", expiration_time=NOW - dt.timedelta(seconds=1)), "cannot be in the past"),
        (Token("a", "s", expiration_ttl=dt.timedelta(seconds=30)), "cannot be less than"),
        (Token("a", "s", expiration_ttl=dt.timedelta(hours=25)), "cannot be more than"),
        (Token("a", "s", expiration_ttl=dt.timedelta(seconds=-5)), "should be > 0"),
    ]:
        with pytest.raises(RecordError, match=message):
            bad.with_expiration(NOW)


@pytest.mark.parametrize(
    ("record", "doc", "field"),
    [
        (Token, {"AccessorID": "not-a-uuid"}, "AccessorID"),
        (Token, {"SecretID": "guessable"}, "SecretID"),
        (Policy, {"ID": "x", "Name": "p"}, "ID"),
        (Role, {"ID": "x", "Name": "r"}, "ID"),
    ],
)
def test_ids_a_client_supplies_must_be_uuids(
    record: type, doc: dict[str, object], field: str
) -> None:
    with pytest.raises(RecordError, match=f"field '{field}': .* is not a valid UUID"):
        record.from_json(doc)


def test_field_names_match_without_case_as_gos_json_decoder_does() -> None:
    # py-consul's policy create sends lowercase keys, and JSON rules as a string.
    policy = Policy.from_json({"name": "web", "rules": '{"service": {"web": {"policy": "write"}}}'})
    assert policy.name == "web" and policy.parsed.segments[0].name == "web"
    role = Role.from_json({"Name": "ops", "TemplatedPolicies": []})  # what py-consul sends
    assert role.name == "ops"


def test_a_field_given_twice_in_two_cases_is_refused() -> None:
    with pytest.raises(RecordError, match="given twice"):
        Policy.from_json({"Name": "a", "name": "b"})
    with pytest.raises(RecordError, match="given twice"):
        Token.from_json({"TemplatedPolicies": [{"TemplateName": "builtin/dns",
                                                "templatename": "builtin/dns"}]})  # fmt: skip


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from([*FIELD_NAMES, "Bad\nKey"]) | st.text(max_size=5), inner, max_size=4
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from([Token, Policy, Role, AuthMethod]), JSONISH)
def test_hostile_json_yields_a_record_or_an_acl_error_and_nothing_else(
    record: type, doc: object
) -> None:
    try:
        parsed = record.from_json(doc)
    except AclError as exc:
        assert "\n" not in str(exc)
        return
    assert record.from_json(parsed.to_json()) == parsed
