"""The pure part of prepared queries (``loom.domain.queries``): parsing and Consul's
validation, lookup by ID, name and template prefix, template rendering, and what an
execution keeps (tags and ``!tags``, health with and without ``OnlyPassing``, meta)."""

from __future__ import annotations

from typing import Any

import pytest

from loom.domain.fields import ValidationError
from loom.domain.queries import (
    find,
    keeps,
    name_conflict,
    near_first,
    parse_query,
    query_doc,
    query_from_doc,
)
from loom.domain.records import Check, Instance, Node


def _q(body: dict[str, Any], qid: str) -> Any:
    return parse_query(body, qid)


def _inst(tags: tuple[str, ...] = (), meta: dict[str, str] | None = None) -> Instance:
    return Instance("n1", "dc1", "web-1", "web", tags=tags, meta=meta or {})


def _check(status: str, check_id: str = "c") -> Check:
    return Check("n1", check_id, check_id, status, service_id="web-1", service_name="web")


NODE = Node("n1", "10.0.0.1", "dc1", meta={"rack": "a"})


def test_a_query_without_a_service_is_refused_as_consul_words_it() -> None:
    with pytest.raises(ValidationError, match="Must provide a Service name to query"):
        parse_query({"Name": "x", "Service": {}})


def test_a_bad_template_type_or_regexp_or_uuid_name_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"Bad Template\.Type 'nope'"):
        parse_query({"Template": {"Type": "nope"}, "Service": {"Service": "a"}})
    with pytest.raises(ValidationError, match="Invalid template regexp"):
        parse_query(
            {"Template": {"Type": "name_prefix_match", "Regexp": "("}, "Service": {"Service": "a"}}
        )
    with pytest.raises(ValidationError, match="cannot be a UUID"):
        parse_query({"Name": "0b4b8b8e-2c0b-4d8e-9c7e-6e0f6d3e0a11", "Service": {"Service": "a"}})


def test_lowercase_keys_parse_as_consul_decodes_them() -> None:
    q = parse_query(
        {"name": "n", "service": {"service": "web", "onlypassing": True, "tags": ["x"]}}
    )
    assert (q.name, q.service.service, q.service.only_passing, q.service.tags) == (
        "n",
        "web",
        True,
        ("x",),
    )


def test_the_stored_document_decodes_to_the_same_query() -> None:
    q = _q(
        {
            "Name": "n",
            "Token": "t",
            "Service": {
                "Service": "web",
                "Tags": ["a", "!b"],
                "Failover": {"NearestN": 2, "Datacenters": ["dc2"]},
                "Near": "_agent",
            },
            "DNS": {"TTL": "10s"},
            "Template": {"Type": "name_prefix_match"},
        },
        "id-1",
    )
    assert query_from_doc(query_doc(q)) == q
    assert query_doc(q, "<hidden>")["Token"] == "<hidden>"


def test_lookup_prefers_the_id_then_the_exact_name_then_the_longest_template_prefix() -> None:
    exact = _q({"Name": "geo-db", "Service": {"Service": "exact"}}, "1")
    short = _q(
        {
            "Name": "geo",
            "Template": {"Type": "name_prefix_match"},
            "Service": {"Service": "${name.suffix}"},
        },
        "2",
    )
    long = _q(
        {
            "Name": "geo-",
            "Template": {"Type": "name_prefix_match"},
            "Service": {"Service": "long-${name.suffix}", "Tags": ["${name.full}"]},
        },
        "3",
    )
    every = [short, exact, long]
    assert find(every, "2") == short
    assert find(every, "geo-db") == exact
    found = find(every, "geo-cache")
    assert found is not None and found.id == "3"
    assert (found.service.service, found.service.tags) == ("long-cache", ("geo-cache",))
    other = find(every, "geox")
    assert other is not None and other.service.service == "x"
    assert find(every, "nothing") is None


def test_a_catch_all_template_matches_any_name_and_regexp_groups_render() -> None:
    t = _q(
        {
            "Name": "",
            "Template": {
                "Type": "name_prefix_match",
                "Regexp": "^(\\w+)-(\\w+)$",
                "RemoveEmptyTags": True,
            },
            "Service": {"Service": "${match(1)}", "Tags": ["${match(2)}", "${match(5)}"]},
        },
        "9",
    )
    found = find([t], "redis-primary")
    assert found is not None
    assert (found.service.service, found.service.tags) == ("redis", ("primary",))


def test_names_may_not_alias_another_query_name_or_id() -> None:
    a = _q({"Name": "a", "Service": {"Service": "s"}}, "id-a")
    assert name_conflict([a], _q({"Name": "a", "Service": {"Service": "s"}}, "id-b"))
    assert name_conflict([a], _q({"Name": "id-a", "Service": {"Service": "s"}}, "id-b"))
    assert name_conflict([a], _q({"Name": "b", "Service": {"Service": "s"}}, "id-b")) is None
    assert name_conflict([a], a) is None  # an update keeps its own name
    unnamed = _q({"Service": {"Service": "s"}}, "id-c")
    assert name_conflict([unnamed], _q({"Service": {"Service": "s"}}, "id-d")) is None


def test_tags_must_be_present_and_bang_tags_absent_case_insensitively() -> None:
    s = _q({"Service": {"Service": "web", "Tags": ["Primary", "!canary"]}}, "1").service
    assert keeps(s, _inst(("primary", "v1")), NODE, [])
    assert not keeps(s, _inst(("primary", "Canary")), NODE, [])
    assert not keeps(s, _inst(("v1",)), NODE, [])


def test_warnings_are_kept_unless_only_passing_and_critical_never() -> None:
    lax = _q({"Service": {"Service": "web"}}, "1").service
    strict = _q({"Service": {"Service": "web", "OnlyPassing": True}}, "1").service
    ignoring = _q({"Service": {"Service": "web", "IgnoreCheckIDs": ["bad"]}}, "1").service
    assert keeps(lax, _inst(), NODE, [_check("warning")])
    assert not keeps(strict, _inst(), NODE, [_check("warning")])
    assert keeps(strict, _inst(), NODE, [_check("passing")])
    assert not keeps(lax, _inst(), NODE, [_check("critical")])
    assert keeps(ignoring, _inst(), NODE, [_check("critical", "bad")])


def test_node_and_service_meta_must_match() -> None:
    s = _q(
        {"Service": {"Service": "web", "NodeMeta": {"rack": "a"}, "ServiceMeta": {"v": "2"}}}, "1"
    ).service
    assert keeps(s, _inst(meta={"v": "2"}), NODE, [])
    assert not keeps(s, _inst(meta={"v": "1"}), NODE, [])
    assert not keeps(s, _inst(meta={"v": "2"}), Node("n1", "x", "dc1", meta={"rack": "b"}), [])


def test_near_sorts_the_named_or_agent_node_first_and_keeps_the_rest_in_order() -> None:
    nodes = ["a", "b", "agent", "c"]
    assert near_first(nodes, "_agent", "agent") == [2, 0, 1, 3]
    assert near_first(nodes, "b", "agent") == [1, 0, 2, 3]
    assert near_first(nodes, "", "agent") == [0, 1, 2, 3]


def test_a_template_with_an_unknown_variable_is_refused_when_stored() -> None:
    with pytest.raises(ValidationError, match=r"unknown variable 'agent\.nope'"):
        parse_query(
            {"Name": "t", "Template": {"Type": "name_prefix_match"},
             "Service": {"Service": "${agent.nope}"}}
        )  # fmt: skip
