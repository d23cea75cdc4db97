"""Which datacenters a prepared query fails over to (``loom.domain.queries``), as Consul's
``queryFailover`` picks them: ``NearestN`` of the other datacenters first, then the listed
ones not among those, unknown and local ones skipped; and ``Failover``'s validation."""

from __future__ import annotations

from typing import Any

import pytest

from loom.domain.fields import ValidationError
from loom.domain.queries import (
    Failover,
    failover_doc,
    failover_targets,
    parse_query,
    query_doc,
    query_from_doc,
)

OTHERS = ["dc2", "dc3", "dc4"]


@pytest.mark.parametrize(
    ("failover", "expected"),
    [
        (Failover(), []),
        (Failover(nearest_n=2), ["dc2", "dc3"]),
        (Failover(nearest_n=9), ["dc2", "dc3", "dc4"]),
        (Failover(datacenters=("dc4", "dc2")), ["dc4", "dc2"]),
        (Failover(nearest_n=1, datacenters=("dc2", "dc4")), ["dc2", "dc4"]),
        (Failover(datacenters=("dc1", "nowhere", "dc3")), ["dc3"]),
        (Failover(datacenters=("dc3", "dc3")), ["dc3", "dc3"]),  # as Consul: tried twice
        (Failover(targets=("dc4", "", "dc2")), ["dc4", "dc2"]),
    ],
)
def test_failover_targets_follow_consuls_order(failover: Failover, expected: list[str]) -> None:
    assert failover_targets(failover, OTHERS) == expected


def _failover(body: dict[str, Any]) -> Failover:
    return parse_query({"Service": {"Service": "web", "Failover": body}}).service.failover


def test_a_failover_parses_from_consuls_json_and_round_trips() -> None:
    f = _failover({"NearestN": 2, "Datacenters": ["dc2"]})
    assert f == Failover(2, ("dc2",))
    t = _failover({"Targets": [{"Datacenter": "dc3"}, {"Peer": "", "Datacenter": "dc2"}]})
    assert t == Failover(targets=("dc3", "dc2"))
    assert failover_doc(t)["Targets"] == [
        {"Peer": "", "Datacenter": "dc3"},
        {"Peer": "", "Datacenter": "dc2"},
    ]
    q = parse_query({"Service": {"Service": "web", "Failover": failover_doc(t)}}, "id-1")
    assert query_from_doc(query_doc(q)) == q
    assert _failover({}).empty and not f.empty


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"NearestN": -1}, "Bad NearestN '-1', must be >= 0"),
        ({"NearestN": 1, "Targets": [{"Datacenter": "dc2"}]}, "Targets cannot be populated"),
        ({"Datacenters": ["x"], "Targets": [{"Datacenter": "dc2"}]}, "Targets cannot be"),
        ({"Targets": [{"Peer": "p"}]}, "peering is not supported"),
        ({"Targets": "dc2"}, "expected a list"),
        ({"Targets": ["dc2"]}, "expected an object"),
        ({"Datacenters": "dc2"}, "expected a list of strings"),
    ],
)
def test_a_bad_failover_is_refused_with_the_reason(body: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        _failover(body)
