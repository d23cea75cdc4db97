"""The authorizer: Consul's merge, match and default rules, and its refusal text.

Tables follow Consul's ``acl/policy_authorizer_test.go`` and ``acl_test.go`` (exact beats
prefix, longest prefix wins, deny > write > list > read across policies, intentions derived
from the service policy, mesh/peering falling back to operator, default allow still keeping
``acl`` closed). The property test checks lookups against a brute-force reading of the same
rules over a small alphabet, where prefixes collide often.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.acl.authorizer import Authorizer
from loom.acl.errors import PermissionDenied
from loom.acl.records import GLOBAL_MANAGEMENT
from loom.acl.rules import PRECEDENCE, Access, PolicyRules, SegmentRule, parse_rules

R, W, L, D = Access.READ, Access.WRITE, Access.LIST, Access.DENY


def authz(*texts: str, default_allow: bool = False) -> Authorizer:
    return Authorizer(
        [parse_rules(t) for t in texts], default_allow=default_allow, accessor_id="a-1"
    )


MATCHING = authz(
    """
    service_prefix "" { policy = "deny" }
    service_prefix "fo" { policy = "write" }
    service_prefix "foo" { policy = "read" }
    service "foo" { policy = "write" }
    service "bar" { policy = "read" }
    service_prefix "bar" { policy = "write" }
    """
)


@pytest.mark.parametrize(
    ("name", "read", "write"),
    [
        ("foo", True, True),  # exact beats the prefix of the same name
        ("food", True, False),  # longest prefix "foo" (read) beats "fo" (write)
        ("fob", True, True),  # only "fo" matches
        ("f", False, False),  # only the empty prefix: deny
        ("bar", True, False),  # exact read beats prefix write on the same segment
        ("barn", True, True),
        ("", False, False),
    ],
)
def test_exact_beats_prefix_and_the_longest_prefix_wins(name: str, read: bool, write: bool) -> None:
    assert (MATCHING.service_read(name), MATCHING.service_write(name)) == (read, write)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("read", "write", W),
        ("write", "read", W),
        ("write", "deny", D),
        ("deny", "read", D),
        ("read", "read", R),
    ],
)
def test_policies_for_the_same_segment_merge_deny_over_write_over_read(
    first: str, second: str, expected: Access
) -> None:
    a = authz(f'node "n" {{ policy = "{first}" }}', f'node "n" {{ policy = "{second}" }}')
    assert (a.node_read("n"), a.node_write("n")) == (expected is not D, expected is W)


def test_list_sits_between_write_and_read_when_key_rules_merge() -> None:
    a = authz('key_prefix "k/" { policy = "list" }', 'key_prefix "k/" { policy = "read" }')
    assert (a.key_read("k/x"), a.key_list("k/x"), a.key_write("k/x")) == (True, True, False)
    b = authz('key_prefix "k/" { policy = "list" }', 'key_prefix "k/" { policy = "write" }')
    assert b.key_write("k/x")


def test_write_implies_list_and_read_and_read_implies_nothing_more() -> None:
    a = authz(
        'key "w" { policy = "write" }\nkey "r" { policy = "read" }\nkey "d" { policy = "deny" }'
    )
    assert [a.key_read("w"), a.key_list("w"), a.key_write("w")] == [True, True, True]
    assert [a.key_read("r"), a.key_list("r"), a.key_write("r")] == [True, False, False]
    assert [a.key_read("d"), a.key_list("d"), a.key_write("d")] == [False, False, False]


@pytest.mark.parametrize(
    ("rule", "read", "write"),
    [
        ('service "web" { policy = "write" }', True, False),
        ('service "web" { policy = "read" }', True, False),
        ('service "web" { policy = "deny" }', False, False),
        ('service "web" { policy = "read" intentions = "write" }', True, True),
        ('service "web" { policy = "write" intentions = "deny" }', False, False),
        ('service_prefix "we" { policy = "write" intentions = "write" }', True, True),
    ],
)
def test_intentions_default_to_read_from_the_service_policy(
    rule: str, read: bool, write: bool
) -> None:
    a = authz(rule)
    assert (a.intention_read("web"), a.intention_write("web")) == (read, write)


def test_intention_levels_merge_apart_from_the_service_policy() -> None:
    a = authz(
        'service "web" { policy = "deny" }',
        'service "web" { policy = "read" intentions = "write" }',
    )
    assert not a.service_read("web")
    assert a.intention_write("web")


def test_wildcard_intention_read_needs_one_rule_and_write_needs_all() -> None:
    some = authz('service "web" { policy = "read" }')
    assert some.intention_read("*") and not some.intention_write("*")
    everything = authz('service_prefix "" { policy = "write" intentions = "write" }')
    assert everything.intention_write("*")
    spoiled = authz(
        'service_prefix "" { policy = "write" intentions = "write" }\nservice "db" { policy = "read" }'
    )
    assert not spoiled.intention_write("*")


def test_mesh_and_peering_fall_back_to_operator() -> None:
    a = authz('operator = "write"')
    assert a.mesh_write() and a.peering_write()
    b = authz('operator = "write"\nmesh = "read"')
    assert b.mesh_read() and not b.mesh_write() and b.peering_write()
    c = authz('operator = "read"')
    assert c.mesh_read() and not c.mesh_write()


def test_default_allow_lets_through_what_no_rule_names_but_not_acl_management() -> None:
    a = authz('service "web" { policy = "deny" }', default_allow=True)
    assert a.service_write("anything") and a.node_write("n") and a.operator_write()
    assert not a.service_read("web")
    assert not a.acl_read() and not a.acl_write()
    assert a.intention_default_allow()


def test_default_deny_refuses_what_no_rule_names() -> None:
    a = authz("")
    assert not any(
        [
            a.service_read("x"),
            a.node_read("x"),
            a.key_read("x"),
            a.operator_read(),
            a.mesh_read(),
            a.agent_read("x"),
            a.event_read("x"),
            a.query_read("x"),
            a.session_read("x"),
            a.keyring_read(),
        ]
    )
    assert not a.intention_default_allow()


def test_the_management_policy_allows_everything_under_default_deny() -> None:
    a = Authorizer([GLOBAL_MANAGEMENT.parsed], default_allow=False)
    assert all(
        [
            a.acl_write(),
            a.service_write("x"),
            a.intention_write("*"),
            a.node_write("n"),
            a.key_write_prefix(""),
            a.operator_write(),
            a.mesh_write(),
            a.peering_write(),
            a.keyring_write(),
            a.agent_write("a"),
            a.event_write("e"),
            a.query_write("q"),
            a.session_write("s"),
            a.service_read_all(),
            a.node_read_all(),
        ]
    )


def test_read_all_and_write_any_walk_every_rule() -> None:
    a = authz('service_prefix "" { policy = "read" }\nservice "secret" { policy = "deny" }')
    assert not a.service_read_all() and not a.service_write_any()
    b = authz('service "web" { policy = "write" }')
    assert b.service_write_any() and not b.service_read_all()


def test_deleting_a_key_tree_needs_write_on_everything_under_it() -> None:
    a = authz('key_prefix "" { policy = "write" }\nkey "app/locked" { policy = "read" }')
    assert a.key_write_prefix("other/")
    assert not a.key_write_prefix("app/")
    assert not a.key_write_prefix("")
    assert not authz('key_prefix "app/" { policy = "read" }').key_write_prefix("app/x")


def test_a_refusal_names_the_token_the_permission_and_the_resource_as_consul_does() -> None:
    a = authz('service "web" { policy = "read" }')
    with pytest.raises(PermissionDenied) as caught:
        a.check("service", W, "web")
    assert str(caught.value) == (
        "Permission denied: token with AccessorID 'a-1' lacks permission 'service:write' on \"web\""
    )
    assert (
        a.describe("operator", R)
        == "Permission denied: token with AccessorID 'a-1' lacks permission 'operator:read'"
    )
    a.check("service", R, "web")
    anonymous = Authorizer([], default_allow=False)
    assert anonymous.describe("intention", W, "db") == (
        "Permission denied: provided token lacks permission 'intention:write' on \"db\""
    )


ALPHABET = "ab"
short = st.text(alphabet=ALPHABET, max_size=3)


@st.composite
def policies(draw: st.DrawFn) -> list[PolicyRules]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        segs = [
            SegmentRule(
                "service", draw(short), draw(st.booleans()), draw(st.sampled_from([R, W, D]))
            )
            for _ in range(draw(st.integers(0, 5)))
        ]
        out.append(PolicyRules(segments=tuple(segs)))
    return out


def reference_level(rules: list[PolicyRules], name: str) -> Access | None:
    """Brute force: merge every matching rule by precedence, then pick exact or longest prefix."""
    merged: dict[tuple[bool, str], Access] = {}
    for policy in rules:
        for r in policy.segments:
            old = merged.get((r.prefix, r.name))
            if old is None or PRECEDENCE[r.policy] > PRECEDENCE[old]:
                merged[(r.prefix, r.name)] = r.policy
    if (False, name) in merged:
        return merged[(False, name)]
    prefixes = [p for (is_prefix, p) in merged if is_prefix and name.startswith(p)]
    return merged[(True, max(prefixes, key=len))] if prefixes else None


@settings(max_examples=400, deadline=None, database=None)
@given(policies(), short, st.booleans())
def test_lookups_agree_with_a_brute_force_reading_of_the_rules(
    rules: list[PolicyRules], name: str, default_allow: bool
) -> None:
    a = Authorizer(rules, default_allow=default_allow)
    level = reference_level(rules, name)
    if level is None:
        assert a.service_read(name) == a.service_write(name) == default_allow
    else:
        assert a.service_read(name) == (level in (R, W))
        assert a.service_write(name) == (level is W)
