"""Prepared queries executed for the DNS name table, over a real core (in-memory store): which
names a query and a template answer, and the executions they carry."""

from __future__ import annotations

import json
from typing import Any

from loom.control.nametable import name_table_text
from loom.control.state import State
from loom.domain.queries import dns_id_key, parse_query


async def register(state: State, sid: str, address: str, tags: list[str], status: str) -> None:
    await state.catalog.catalog_register({
        "Node": f"node-{sid}", "Address": address,
        "Service": {"Service": "gq", "ID": sid, "Port": 7000, "Tags": tags},
        "Checks": [{"CheckID": f"{sid}-ok", "Name": "ok", "Status": status, "ServiceID": sid}],
    })  # fmt: skip


def entries(state: State) -> dict[str, Any]:
    table = json.loads(name_table_text(state.snapshot()))
    return {e.get("Name") or "#" + e["IDHash"]: e for e in table.get("Queries", [])}


async def test_no_queries_leave_the_table_as_older_proxies_read_it(state: State) -> None:
    await register(state, "a", "10.0.0.1", [], "passing")
    assert "Queries" not in json.loads(name_table_text(state.snapshot()))


async def test_a_query_is_listed_by_name_and_id_hash_with_its_ttl_and_health(state: State) -> None:
    await register(state, "a", "10.0.0.1", [], "passing")
    await register(state, "b", "10.0.0.2", [], "warning")
    q = await state.queries.create(parse_query({"Name": "Pass", "DNS": {"TTL": "1m"},
                                   "Service": {"Service": "gq", "OnlyPassing": True}}))  # fmt: skip
    await state.queries.create(parse_query({"Name": "bad.name", "Service": {"Service": "gq"}}))
    got = entries(state)
    assert got["pass"] == {"Name": "pass", "Service": "gq", "TTL": 60, "Ordered": False,
                           "Instances": [{"Address": "10.0.0.1", "Port": 7000}]}  # fmt: skip
    assert got["#" + dns_id_key(q.id)]["Instances"] == got["pass"]["Instances"]
    assert "bad.name" not in got  # no DNS label: its ID still answers
    assert len([k for k in got if k.startswith("#")]) == 2
    await register(state, "a", "10.0.0.1", [], "critical")
    assert entries(state)["pass"]["Instances"] == []  # NODATA, as a service with none healthy


async def test_a_template_answers_catalog_names_unless_a_query_or_longer_prefix_does(
    state: State,
) -> None:
    await register(state, "a", "10.0.0.1", ["primary"], "passing")
    await register(state, "b", "10.0.0.2", ["replica"], "passing")
    template = {"Type": "name_prefix_match"}
    await state.queries.create(parse_query({"Name": "gq-", "Template": template,
                               "Service": {"Service": "gq", "Tags": ["${name.suffix}"]}}))  # fmt: skip
    await state.queries.create(parse_query({"Name": "gq-rep", "Template": template,
                               "Service": {"Service": "gq", "Tags": ["primary"]}}))  # fmt: skip
    await state.queries.create(parse_query({"Name": "gq-primary", "Service": {"Service": "gq",
                               "Tags": ["replica"]}}))  # fmt: skip
    got = {k: [i["Address"] for i in e["Instances"]] for k, e in entries(state).items()
           if not k.startswith("#")}  # fmt: skip
    assert got["gq-primary"] == ["10.0.0.2"]  # a query of that name wins over the template
    assert got["gq-replica"] == ["10.0.0.1"]  # the longer prefix gq-rep renders it
    assert got["gq-repprimary"] == ["10.0.0.1"]
    assert "gq-gq" not in got  # renders, keeps nothing: not listed
    # gq-rep's tags do not depend on the name: every catalog word after its prefix answers.
    assert sorted(got) == [
        "gq-primary", "gq-repgq", "gq-replica", "gq-repprimary", "gq-repreplica"]  # fmt: skip
