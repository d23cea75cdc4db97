"""The filter language, case by case, from Consul's "Filtering" docs and go-bexpr's semantics.

The first tables replay the docs' own examples (agent services by ``Meta.env``, catalog
instances by ``NodeMeta.os``, a node's checks by ``ServiceName != ""``); the rest are
go-bexpr's rules: ``contains`` is ``in`` written the other way round, ``in`` a string is a
substring test, a selector through a list matches when any element does, absent fields are
zero values, absent map keys make the positive operators false, values convert to the
field's type as Go's strconv reads them, and everything malformed is a ``FilterError``
naming the problem and its column.
"""

from __future__ import annotations

from typing import Any

import pytest

from loom.bexpr import (
    BOOL,
    FLOAT,
    INT,
    STRING,
    BoolOp,
    FilterError,
    ListOf,
    MapOf,
    Match,
    Not,
    Struct,
    compile_filter,
    parse,
)

SERVICE = Struct(
    {
        "ID": STRING,
        "Service": STRING,
        "Tags": ListOf(STRING),
        "Meta": MapOf(STRING),
        "Port": INT,
        "Address": STRING,
        "Weights": Struct({"Passing": INT, "Warning": INT}),
        "EnableTagOverride": BOOL,
        "Ratio": FLOAT,
        "TaggedAddresses": MapOf(Struct({"Address": STRING, "Port": INT})),
        "Checks": ListOf(Struct({"Status": STRING, "ServiceTags": ListOf(STRING)})),
        "Proxy": Struct({"Upstreams": ListOf(Struct({"DestinationName": STRING}))}),
    }
)


def redis(n: int, tags: list[str], meta: dict[str, str], port: int = 1234) -> dict[str, Any]:
    return {
        "ID": f"redis{n}",
        "Service": "redis",
        "Tags": tags,
        "Meta": meta,
        "Port": port,
        "Address": "",
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
    }


# The agent services of Consul's filtering docs.
AGENT_SERVICES = {
    "redis1": redis(1, ["primary", "production"], {"env": "production", "foo": "bar"}),
    "redis2": redis(2, ["secondary", "production"], {"env": "production", "foo": "bar"}, 1235),
    "redis3": redis(3, ["primary", "qa"], {"env": "qa"}),
}


def kept(expr: str, docs: dict[str, dict[str, Any]], schema: Struct = SERVICE) -> list[str]:
    flt = compile_filter(expr, schema)
    assert flt is not None
    return sorted(k for k, doc in docs.items() if flt.matches(doc))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('Meta.env == "qa"', ["redis3"]),  # the docs' example
        ('Meta["env"] == "qa"', ["redis3"]),  # the same key, indexed
        ("Meta.env == qa", ["redis3"]),  # a bare value
        ("Meta.env == `qa`", ["redis3"]),  # a raw string
        ('Meta.env != "qa"', ["redis1", "redis2"]),
        ('"primary" in Tags', ["redis1", "redis3"]),
        ('Tags contains "primary"', ["redis1", "redis3"]),
        ('"primary" not in Tags', ["redis2"]),
        ('Tags not contains "primary"', ["redis2"]),
        ('"foo" in Meta', ["redis1", "redis2"]),  # in a map: a key
        ('"foo" not in Meta', ["redis3"]),
        ("Meta.foo == bar", ["redis1", "redis2"]),
        ("Meta.foo != bar", ["redis3"]),  # an absent key is != anything
        ('Meta.foo != ""', ["redis1", "redis2", "redis3"]),
        ('Meta.foo == ""', []),  # absent is not equal even to the empty string
        ('Meta.foo matches "^b"', ["redis1", "redis2"]),
        ('Meta.foo not matches "^b"', ["redis3"]),
        ("Port == 1235", ["redis2"]),
        ('Port == "1235"', ["redis2"]),  # strings convert to the field's type
        ('Port == "0x4d3"', ["redis2"]),  # as Go's ParseInt(s, 0, 64) reads them
        ("Port != 1234", ["redis2"]),
        ("EnableTagOverride == false", ["redis1", "redis2", "redis3"]),
        ("EnableTagOverride == true", []),
        ("EnableTagOverride == F", ["redis1", "redis2", "redis3"]),
        ("Weights.Passing == 1", ["redis1", "redis2", "redis3"]),
        ('"edi" in Service', ["redis1", "redis2", "redis3"]),  # in a string: a substring
        ('Service contains "x"', []),
        ('ID matches "^redis[12]$"', ["redis1", "redis2"]),
        ("Ratio == 0", ["redis1", "redis2", "redis3"]),  # absent: the zero value
        ("Address == ``", ["redis1", "redis2", "redis3"]),
        ("Tags is empty", []),
        ("Checks is empty", ["redis1", "redis2", "redis3"]),
        ("Proxy.Upstreams.DestinationName == db", []),
        ('Meta.env == "qa" or Port == 1235', ["redis2", "redis3"]),
        ('Meta.env == "production" and "primary" in Tags', ["redis1"]),
        ('not Meta.env == "qa"', ["redis1", "redis2"]),
        ('not (Meta.env == "qa" or Port == 1235)', ["redis1"]),
        # and binds tighter than or (the docs' precedence example)
        ("ID == redis1 and not Port == 1 or ID == redis3", ["redis1", "redis3"]),
        ("(ID == redis1 and (not Port == 1)) or ID == redis3", ["redis1", "redis3"]),
        ("ID == redis1 and (not Port == 1 or ID == redis3)", ["redis1"]),
        ("not(ID==redis1)", ["redis2", "redis3"]),  # bexpr wants spaces; Loom does not
    ],
)
def test_agent_services_are_filtered_as_consul_documents(expr: str, expected: list[str]) -> None:
    assert kept(expr, AGENT_SERVICES) == expected


CATALOG = Struct({"Node": STRING, "NodeMeta": MapOf(STRING), "ServiceTags": ListOf(STRING)})


def test_catalog_instances_are_filtered_on_node_meta_as_in_the_docs() -> None:
    docs = {
        "node-1": {"Node": "node-1", "NodeMeta": {"agent": "true", "os": "darwin"}},
        "node-2": {"Node": "node-2", "NodeMeta": {"arch": "arm", "os": "linux"}},
        "node-4": {"Node": "node-4", "NodeMeta": {"os": "freebsd"}, "ServiceTags": []},
    }
    assert kept('NodeMeta.os == "linux"', docs, CATALOG) == ["node-2"]
    assert kept("NodeMeta.agent == true", docs, CATALOG) == ["node-1"]  # a string "true"


def test_a_nodes_checks_are_filtered_on_service_name_as_in_the_docs() -> None:
    schema = Struct({"CheckID": STRING, "ServiceName": STRING})
    docs = {
        "node-health": {"CheckID": "node-health", "ServiceName": ""},
        "svc-web-health": {"CheckID": "svc-web-health", "ServiceName": "web"},
    }
    assert kept('ServiceName != ""', docs, schema) == ["svc-web-health"]


HEALTH = {
    "all-passing": {"Checks": [{"Status": "passing"}, {"Status": "passing"}]},
    "one-critical": {"Checks": [{"Status": "passing"}, {"Status": "critical"}]},
    "no-checks": {"Checks": []},
    "tagged": {"Checks": [{"Status": "warning", "ServiceTags": ["v1"]}]},
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("Checks.Status == passing", ["all-passing", "one-critical"]),  # any element
        ("Checks.Status != passing", ["one-critical", "tagged"]),  # any element, negated
        ("not Checks.Status != passing", ["all-passing", "no-checks"]),  # i.e. all passing
        ("Checks.Status == critical", ["one-critical"]),
        ("Checks is empty", ["no-checks"]),
        ("Checks is not empty", ["all-passing", "one-critical", "tagged"]),
        ('"v1" in Checks.ServiceTags', ["tagged"]),
        ("Checks.ServiceTags is empty", ["all-passing", "one-critical"]),
    ],
)
def test_a_selector_through_a_list_matches_when_any_element_does(
    expr: str, expected: list[str]
) -> None:
    assert kept(expr, HEALTH) == expected


def test_map_values_are_selected_by_any_key_including_ones_no_name_can_spell() -> None:
    docs = {
        "a": {"TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}}},
        "b": {"TaggedAddresses": {"wan ipv4": {"Address": "192.0.2.1", "Port": 443}}},
    }
    assert kept('TaggedAddresses.lan.Address == "10.0.0.1"', docs) == ["a"]
    assert kept('TaggedAddresses["wan ipv4"].Port == 443', docs) == ["b"]
    assert kept('"lan" in TaggedAddresses', docs) == ["a"]
    assert kept("TaggedAddresses.lan.Port != 80", docs) == ["b"]  # absent key: != holds


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("Service ==", "column 11: expected a value, found end of expression"),
        ('Service = "x"', "column 9: unexpected '='"),
        ('"x" == Service', "column 1: expected a selector"),
        ('(Service == "x"', "column 16: expected ')'"),
        ('Service == "x" and', "column 19: expected a selector or a value"),
        ('Service == "x" Port', "column 16: expected 'and', 'or' or the end"),
        ("Service is full", "column 12: expected 'empty'"),
        ("Service", "column 8: expected an operator"),
        ('Service == "x', "column 12: unterminated string literal"),
        ("Service == `x", "column 12: unterminated string literal"),
        ('Service == "\\q"', "column 13: invalid escape sequence"),
        ("Address == 10.0.0.1", "column 12: invalid number literal"),
        ("Meta[env] == x", "column 6: invalid index"),
        ('Meta["env" == x', "column 12: unclosed index expression"),
        ("Meta. == x", "column 6: expected a name after '.'"),
        ("", "empty expression"),
        ("Servce == web", 'column 1: Selector "Servce" is not valid'),
        ("Weights.Pasing == 1", 'column 1: Selector "Weights.Pasing" is not valid'),
        ("Service.Name == web", 'Selector "Service.Name" is not valid'),
        ("Tags == web", 'Invalid match operator "==" for selector "Tags"'),
        ("Port contains 1", 'Invalid match operator "in" for selector "Port"'),
        ("Weights is empty", 'Invalid match operator "is empty" for selector "Weights"'),
        ("Meta.env is empty", 'Invalid match operator "is empty" for selector "Meta.env"'),
        ("Port == web", 'Failed to coerce value "web" for selector "Port": not an integer'),
        ("EnableTagOverride == yes", 'Failed to coerce value "yes"'),
        ("Port == 9223372036854775808", "out of range"),
        ('Service matches "(x"', "Failed to compile regular expression '(x'"),
        ('Service matches "\\\\1"', "invalid escape sequence"),
        ("ID == a and\n  Nope == 1", 'line 2, column 3: Selector "Nope" is not valid'),
    ],
)
def test_a_bad_expression_is_an_error_naming_the_problem_and_its_column(
    expr: str, message: str
) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(expr or " ", SERVICE) if expr else parse(expr)
    assert message in str(caught.value)


def test_escapes_in_double_quoted_strings_are_gos_and_raw_strings_have_none() -> None:
    match = parse('Service == "a\\"b\\n\\t\\u00e9\\x41\\101\\\\"')
    assert isinstance(match, Match) and match.value == 'a"b\n\téAA\\'
    raw = parse('Service == `a\\n"`')
    assert isinstance(raw, Match) and raw.value == 'a\\n"'


def test_and_or_chains_are_flat_so_a_long_filter_never_recurses_deeply() -> None:
    expr = parse(" or ".join(f"ID == s{i}" for i in range(4000)))
    assert isinstance(expr, BoolOp) and len(expr.operands) == 4000
    flt = compile_filter(" and ".join(f"Port != {i}" for i in range(3000)), SERVICE)
    assert flt is not None and flt.matches({"Port": 99999})


def test_nesting_is_bounded_with_an_error_not_a_recursion_error() -> None:
    with pytest.raises(FilterError, match="nested deeper than 32 levels"):
        parse("(" * 1000 + "ID == x" + ")" * 1000)
    with pytest.raises(FilterError, match="nested deeper"):
        parse("not " * 1000 + "ID == x")
    assert isinstance(parse("not " * 30 + "ID == x"), Not)


def test_an_over_long_expression_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(FilterError, match="longer than 65536 characters"):
        parse("ID == " + "x" * 70000)


def test_keywords_are_values_where_a_value_is_expected() -> None:
    assert kept("Service == empty", {"a": {"Service": "empty"}, "b": {"Service": "x"}}) == ["a"]
