"""The rule language: Consul's HCL and JSON forms read into the same typed rules.

Cases follow Consul's ``acl/policy_test.go``: every resource in both forms, ``list`` only on
keys, ``intentions`` only on services, and the refusals (unknown resource, unknown field, bad
level) with where they are. The fuzz tests hold the parser to its contract: on any text it
returns rules or raises ``AclError``, nothing else; printed rules parse back to themselves.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.acl.errors import AclError
from loom.acl.hcl import RuleSyntaxError
from loom.acl.rules import Access, PolicyRules, RuleValueError, SegmentRule, parse_rules
from tests.unit.acl.acltest import EVERY_RESOURCE_HCL, EVERY_RESOURCE_JSON

FUZZ = settings(max_examples=300, deadline=None, database=None)


def canonical(rules: PolicyRules) -> tuple[object, ...]:
    segments = sorted(rules.segments, key=lambda r: (r.resource, r.prefix, r.name, r.policy))
    return (tuple(segments), rules.acl, rules.operator, rules.mesh, rules.peering, rules.keyring)


def test_every_resource_reads_the_same_in_hcl_and_json() -> None:
    hcl = parse_rules(EVERY_RESOURCE_HCL)
    assert canonical(hcl) == canonical(parse_rules(json.dumps(EVERY_RESOURCE_JSON)))
    assert len(hcl.segments) == 14
    assert (hcl.acl, hcl.keyring, hcl.mesh, hcl.operator, hcl.peering) == (
        Access.READ,
        Access.DENY,
        Access.WRITE,
        Access.READ,
        Access.READ,
    )
    assert SegmentRule("service", "web", False, Access.WRITE, Access.READ) in hcl.segments
    assert SegmentRule("key", "foo/", True, Access.LIST) in hcl.segments


@pytest.mark.parametrize(
    "text",
    [
        'service = { "web" = { policy = "write" } }',
        'service { "web" { policy = "write" } }',
        'service "web" {\n  policy = "write"\n}',
        'service "web" { policy = "write", }',
        '# a comment\nservice "web" { policy = "write" } // trailing',
        '/* block\n comment */ service "web" { policy = "write" }',
        '"service" "web" { "policy" = "write" }',
        'service = [ { "web" = { policy = "write" } } ]',
        '{"service": [{"web": {"policy": "write"}}]}',
    ],
)
def test_the_block_forms_consul_accepts_mean_the_same_rule(text: str) -> None:
    assert parse_rules(text).segments == (SegmentRule("service", "web", False, Access.WRITE),)


def test_strings_keep_their_escapes() -> None:
    rules = parse_rules('key_prefix "a\\"b\\\\c\\u00e9\\n" { policy = "read" }')
    assert rules.segments[0].name == 'a"b\\c\u00e9\n'


def test_dollar_brace_in_a_name_is_literal_text_not_interpolation() -> None:
    assert parse_rules('key_prefix "${x}" { policy = "read" }').segments[0].name == "${x}"


def test_empty_rules_grant_nothing() -> None:
    assert parse_rules("") == PolicyRules()
    assert parse_rules("  # only a comment\n") == PolicyRules()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('servic "web" { policy = "read" }', "unknown resource 'servic'"),
        ('namespace "x" { policy = "read" }', "unknown resource 'policy'"),
        ('service "web" { policy = "wrte" }', "policy 'wrte' is not one of deny, read, write"),
        (
            'service "web" { policy = "read" polcy = "write" }',
            "line 1, column 33: unknown field 'polcy'",
        ),
        ('service "web" { }', "missing field 'policy'"),
        ('node "n" { policy = "read" intentions = "read" }', "unknown field 'intentions'"),
        ('node "n" { policy = "list" }', "policy 'list' is not one of deny, read, write"),
        ('service "web" { policy = "read" intentions = "list" }', "intentions 'list'"),
        ('operator = "list"', "operator 'list' is not one of"),
        ("operator = true", "operator must be a string"),
        ('service "web" { policy = 1 }', "policy must be a string"),
        ('service = "write"', "expected a block, found a string"),
        ('{"service": {"web": {"policy": "wrte"}}}', "rules.service.web.policy: policy 'wrte'"),
        ('{"service": {"web": null}}', "null is not allowed"),
        ('{"operator": ', "Failed to parse ACL rules: line 1"),
    ],
)
def test_what_consul_refuses_is_an_error_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(RuleValueError) as caught:
        parse_rules(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            'service "web" { policy = "read"',
            "line 1, column 32: expected a key, found end of input",
        ),
        ('service "web {\n', "line 1, column 9: unterminated string"),
        ("/* never closed", "line 1, column 1: unterminated /* comment"),
        ('service "we\\qb" { policy = "read" }', "bad escape '\\\\q'"),
        ('service "web" { policy = read }', "expected a value, found 'read'"),
        ("\n\n  @", "line 3, column 3: unexpected character '@'"),
        ('service "web" } ', "expected '=' or '{'"),
        ('service "web" = "write"', "'service' with a label needs a block"),
    ],
)
def test_malformed_text_names_line_column_and_token(text: str, where: str) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        parse_rules(text)
    assert where in str(caught.value)


def test_an_attacker_cannot_exhaust_the_stack_with_nesting() -> None:
    with pytest.raises(RuleSyntaxError, match="nested too deeply"):
        parse_rules("service = " + "[" * 5000)


names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
levels = st.sampled_from([Access.DENY, Access.READ, Access.WRITE])


@st.composite
def rule_sets(draw: st.DrawFn) -> PolicyRules:
    segments = []
    for _ in range(draw(st.integers(0, 6))):
        resource = draw(
            st.sampled_from(["service", "node", "key", "agent", "session", "event", "query"])
        )
        policy = draw(st.sampled_from(list(Access)) if resource == "key" else levels)
        intentions = draw(st.none() | levels) if resource == "service" else None
        segments.append(SegmentRule(resource, draw(names), draw(st.booleans()), policy, intentions))
    single = {
        n: draw(st.none() | levels) for n in ("acl", "operator", "mesh", "peering", "keyring")
    }
    return PolicyRules(segments=tuple(segments), **single)


@FUZZ
@given(rule_sets())
def test_printed_rules_parse_back_to_the_same_rules(rules: PolicyRules) -> None:
    assert parse_rules(rules.to_hcl()) == rules
    assert canonical(parse_rules(rules.to_json())) == canonical(rules)


FRAGMENTS = [
    "service",
    '"web"',
    "{",
    "}",
    "=",
    '"write"',
    "policy",
    "[",
    "]",
    ",",
    "#",
    "/*",
    "*/",
    "//",
    "\n",
    '"',
    "\\",
    "operator",
    '"list"',
    "_prefix",
    "true",
    "1.5",
    "${",
]


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=20).map(" ".join) | st.text(max_size=60))
def test_hostile_text_yields_rules_or_an_acl_error_and_nothing_else(text: str) -> None:
    try:
        parse_rules(text)
    except AclError as exc:
        assert "\n" not in str(exc)


def test_deeply_nested_json_rules_are_an_acl_error() -> None:
    with pytest.raises(RuleValueError, match="nested too deeply"):
        parse_rules('{"service": ' + "[" * 100_000 + "]" * 100_000 + "}")
