"""Prepared queries on a real `loom server`, judged by Consul's API docs and its
``api/prepared_query_test.go``: create answers an ID, the query reads back, updates and
deletes; execute filters by tags (``!tag`` too) and health (``OnlyPassing``), honours
``?limit`` and ``Near``; templates render for the name called; explain shows the rendered
query; queries survive a restart of a server with a data directory; py-consul's ``query.*``
calls work end to end."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import pytest

from tests.support.server import ServerProcess, start_server


def _register(server: ServerProcess, node: str, sid: str, tags: list[str], status: str) -> None:
    server.put(
        "/v1/catalog/register",
        {
            "Node": node,
            "Address": f"10.1.0.{node[-1]}",
            "Service": {"Service": "redis", "ID": sid, "Port": 6379, "Tags": tags},
            "Checks": [{"CheckID": f"{sid}-ok", "Name": "ok", "Status": status, "ServiceID": sid}],
        },
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = start_server()
    try:
        _register(s, "n1", "r1", ["primary", "v1"], "passing")
        _register(s, "n2", "r2", ["replica", "v1"], "warning")
        _register(s, "n3", "r3", ["replica", "canary"], "passing")
        _register(s, "n4", "r4", ["replica"], "critical")
        yield s
    finally:
        s.stop()


def _create(server: ServerProcess, body: dict[str, Any]) -> str:
    status, out, _ = server.request("POST", "/v1/query", body)
    assert status == 200, out
    assert set(out) == {"ID"}
    qid: str = out["ID"]
    return qid


def _ids(result: dict[str, Any]) -> list[str]:
    return [n["Service"]["ID"] for n in result["Nodes"]]


def test_a_query_is_created_read_updated_and_deleted(server: ServerProcess) -> None:
    qid = _create(server, {"Name": "crud", "Service": {"Service": "redis", "Tags": ["v1"]}})
    [got] = server.get(f"/v1/query/{qid}")
    assert (got["ID"], got["Name"], got["Service"]["Service"], got["Service"]["Tags"]) == (
        qid, "crud", "redis", ["v1"],
    )  # fmt: skip
    assert got["CreateIndex"] == got["ModifyIndex"] > 0
    assert qid in [q["ID"] for q in server.get("/v1/query")]
    status, _, _ = server.request(
        "PUT", f"/v1/query/{qid}", {"Name": "crud", "Service": {"Service": "other"}}
    )
    assert status == 200
    [after] = server.get(f"/v1/query/{qid}")
    assert after["Service"]["Service"] == "other"
    assert after["CreateIndex"] == got["CreateIndex"] < after["ModifyIndex"]
    assert server.request("DELETE", f"/v1/query/{qid}")[0] == 200
    status, text, _ = server.request("GET", f"/v1/query/{qid}")
    assert (status, text) == (404, "Query not found\n")
    assert qid not in [q["ID"] for q in server.get("/v1/query")]


def test_bad_queries_are_refused_with_consul_words(server: ServerProcess) -> None:
    status, text, _ = server.request("POST", "/v1/query", {"Name": "x", "Service": {}})
    assert status == 400 and "Must provide a Service name to query" in text
    _create(server, {"Name": "taken", "Service": {"Service": "redis"}})
    status, text, _ = server.request(
        "POST", "/v1/query", {"Name": "taken", "Service": {"Service": "a"}}
    )
    assert status == 400 and "aliases an existing query name" in text
    status, text, _ = server.request(
        "POST", "/v1/query", {"Service": {"Service": "a"}, "Session": "not-a-session"}
    )
    assert status == 400 and "invalid session" in text
    status, text, _ = server.request("GET", "/v1/query/nope/execute")
    assert (status, text) == (404, "Query not found\n")


def test_execute_keeps_tags_and_health_as_the_query_asks(server: ServerProcess) -> None:
    _create(
        server,
        {"Name": "replicas", "Service": {"Service": "redis", "Tags": ["replica", "!canary"]}},
    )
    result = server.get("/v1/query/replicas/execute")
    assert (result["Service"], result["Datacenter"], result["Failovers"]) == ("redis", "dc1", 0)
    assert _ids(result) == ["r2"]  # r3 is a canary, r4 critical; r2's warning is kept
    _create(server, {"Name": "passing", "Service": {"Service": "redis", "OnlyPassing": True}})
    assert sorted(_ids(server.get("/v1/query/passing/execute"))) == ["r1", "r3"]
    entry = server.get("/v1/query/passing/execute")["Nodes"][0]
    assert set(entry) == {"Node", "Service", "Checks"} and entry["Checks"][0]["Status"] == "passing"


def test_limit_cuts_the_answer_and_near_puts_the_named_node_first(server: ServerProcess) -> None:
    qid = _create(server, {"Name": "near", "Service": {"Service": "redis", "Near": "n3"}})
    assert _ids(server.get(f"/v1/query/{qid}/execute"))[0] == "r3"
    assert len(_ids(server.get(f"/v1/query/{qid}/execute?limit=1"))) == 1
    assert _ids(server.get(f"/v1/query/{qid}/execute?near=n2"))[0] == "r2"
    agent = _create(server, {"Name": "agent", "Service": {"Service": "redis", "Near": "_agent"}})
    assert len(_ids(server.get(f"/v1/query/{agent}/execute"))) == 3
    assert server.request("GET", f"/v1/query/{qid}/execute?limit=x")[0] == 400


def test_failover_is_accepted_and_reports_no_failover_in_one_datacenter(
    server: ServerProcess,
) -> None:
    body = {"Name": "fo", "Service": {"Service": "nothing-here",
            "Failover": {"NearestN": 3, "Datacenters": ["dc2", "dc3"]}}}  # fmt: skip
    qid = _create(server, body)
    [got] = server.get(f"/v1/query/{qid}")
    assert got["Service"]["Failover"]["Datacenters"] == ["dc2", "dc3"]
    result = server.get("/v1/query/fo/execute")
    assert (result["Nodes"], result["Failovers"]) == ([], 0)


def test_a_template_renders_for_the_name_it_is_called_by(server: ServerProcess) -> None:
    _create(server, {"Name": "geo-", "Template": {"Type": "name_prefix_match"},
                     "Service": {"Service": "${name.suffix}", "Tags": ["${name.prefix}x", "!canary"]}})  # fmt: skip
    server.put(
        "/v1/catalog/register",
        {"Node": "n9", "Address": "10.1.0.9",
         "Service": {"Service": "redis", "ID": "r9", "Port": 1, "Tags": ["geo-x"]}},
    )  # fmt: skip
    assert _ids(server.get("/v1/query/geo-redis/execute")) == ["r9"]
    explained = server.get("/v1/query/geo-redis/explain")["Query"]
    assert explained["Service"]["Service"] == "redis"
    assert explained["Service"]["Tags"] == ["geo-x", "!canary"]
    _create(server, {"Name": "re-", "Template": {"Type": "name_prefix_match",
                     "Regexp": "^re-(.+)$"}, "Service": {"Service": "${match(1)}"}})  # fmt: skip
    assert server.get("/v1/query/re-redis/explain")["Query"]["Service"]["Service"] == "redis"


def test_queries_survive_a_restart_of_a_server_with_a_data_dir(tmp_path: Path) -> None:
    first = start_server(data_dir=tmp_path)
    try:
        qid = _create(first, {"Name": "kept", "Service": {"Service": "x"}})
    finally:
        first.stop()
    second = start_server(data_dir=tmp_path)
    try:
        [got] = second.get(f"/v1/query/{qid}")
        assert got["Name"] == "kept"
    finally:
        second.stop()


def test_py_consul_query_calls_work(server: ServerProcess) -> None:
    host, port = server.http.rsplit(":", 1)
    c = consul.Consul(host=host, port=int(port))
    created = c.query.create("redis", name="py-", onlypassing=True, tags=["v1"], ttl="10s")
    qid = created["ID"]
    assert c.query.get(qid)[0]["Template"]["Type"] == "name_prefix_match"
    assert qid in [q["ID"] for q in c.query.list()]
    result = c.query.execute("py-anything")
    assert [n["Service"]["ID"] for n in result["Nodes"]] == ["r1"]
    assert result["DNS"]["TTL"] == "10s"
    assert c.query.execute(qid, limit=1)["Service"] == "redis"
    assert c.query.explain("py-x")["Query"]["Service"]["OnlyPassing"] is True
    assert c.query.update(qid, "redis", name="py-", tags=["replica"]) is True
    # An update replaces the whole query: OnlyPassing is gone, so r2's warning is kept.
    assert sorted(n["Service"]["ID"] for n in c.query.execute(qid)["Nodes"]) == ["r2", "r3"]
    assert c.query.delete(qid) is True
    assert qid not in [q["ID"] for q in c.query.list()]


def test_a_snapshot_carries_the_queries_and_a_restore_brings_them_back(
    server: ServerProcess,
) -> None:
    qid = _create(server, {"Name": "snapped", "Service": {"Service": "redis"}})
    with urllib.request.urlopen(f"http://{server.http}/v1/snapshot", timeout=30) as resp:
        blob = resp.read()
    assert server.request("DELETE", f"/v1/query/{qid}")[0] == 200
    assert server.request("GET", f"/v1/query/{qid}")[0] == 404
    status, text, _ = server.request("PUT", "/v1/snapshot", blob)
    assert status == 200, text
    [got] = server.get(f"/v1/query/{qid}")
    assert got["Name"] == "snapped"
