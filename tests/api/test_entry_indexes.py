"""Per-entry raft indexes on a real `loom server`, read through py-consul: a service's,
check's and node's CreateIndex/ModifyIndex move only when that entry changes, a body cannot
set them, and they survive a SIGKILL and restart of a server with a data dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import consul

from tests.support.server import ServerProcess, start_server


def _client(server: ServerProcess) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


def _register(server: ServerProcess, node: str, sid: str, **service: Any) -> None:
    server.put("/v1/catalog/register", {
        "Node": node, "Address": "10.3.0.1",
        "Service": {"Service": "idx", "ID": sid, "Port": 80, **service},
        "Checks": [{"CheckID": f"{sid}-up", "Name": "up", "Status": "passing", "ServiceID": sid}],
    })  # fmt: skip


def _service(c: consul.Consul, sid: str) -> tuple[int, int]:
    _, nodes = c.catalog.service("idx")
    [hit] = [n for n in nodes if n["ServiceID"] == sid]
    return hit["CreateIndex"], hit["ModifyIndex"]


def _check(c: consul.Consul, sid: str) -> tuple[int, int]:
    _, checks = c.health.checks("idx")
    [hit] = [x for x in checks if x["ServiceID"] == sid]
    return hit["CreateIndex"], hit["ModifyIndex"]


def _node(c: consul.Consul, name: str) -> tuple[int, int]:
    _, nodes = c.catalog.nodes()
    [hit] = [n for n in nodes if n["Node"] == name]
    return hit["CreateIndex"], hit["ModifyIndex"]


def test_registering_another_entry_moves_none_of_the_first_ones_indexes(
    loom_server: ServerProcess,
) -> None:
    c = _client(loom_server)
    _register(loom_server, "ix1", "idx-1")
    first = (_service(c, "idx-1"), _check(c, "idx-1"), _node(c, "ix1"))
    assert first[0][0] == first[0][1] == first[1][0] == first[2][1]
    _register(loom_server, "ix2", "idx-2")
    index, _ = c.catalog.service("idx")
    assert int(index) > first[0][1]  # the table moved...
    assert (_service(c, "idx-1"), _check(c, "idx-1"), _node(c, "ix1")) == first  # ...not idx-1
    assert _service(c, "idx-2")[0] > first[0][0]


def test_changing_a_service_moves_its_modify_index_and_keeps_its_create_index(
    loom_server: ServerProcess,
) -> None:
    c = _client(loom_server)
    _register(loom_server, "ix3", "idx-3")
    created, _ = _service(c, "idx-3")
    check_before = _check(c, "idx-3")
    _register(loom_server, "ix3", "idx-3", Tags=["v2"])
    again, modified = _service(c, "idx-3")
    assert again == created and modified > created
    assert _check(c, "idx-3") == check_before  # re-sent unchanged: the check did not move


def test_a_ttl_check_update_moves_that_checks_modify_index_only(
    loom_server: ServerProcess,
) -> None:
    c = _client(loom_server)
    c.agent.service.register("ttl-idx", service_id="ttl-idx", check=consul.Check.ttl("30s"))
    _, [entry] = c.health.service("ttl-idx")
    service = (entry["Service"]["ID"], *_agent_indexes(c, "ttl-idx"))
    [check] = entry["Checks"]
    c.agent.check.ttl_pass(check["CheckID"], "fine")
    _, [after] = c.health.service("ttl-idx")
    [moved] = after["Checks"]
    assert moved["CreateIndex"] == check["CreateIndex"]
    assert moved["ModifyIndex"] > check["ModifyIndex"]
    assert (after["Service"]["ID"], *_agent_indexes(c, "ttl-idx")) == service


def _agent_indexes(c: consul.Consul, name: str) -> tuple[int, int]:
    _, [hit] = c.catalog.service(name)
    return hit["CreateIndex"], hit["ModifyIndex"]


def test_a_registration_body_cannot_set_its_own_indexes(loom_server: ServerProcess) -> None:
    status, _, _ = loom_server.request("PUT", "/v1/catalog/register", {
        "Node": "ix4", "Address": "10.3.0.4", "CreateIndex": 999999, "ModifyIndex": 999999,
        "Service": {"Service": "idx", "ID": "idx-4", "Port": 80,
                    "CreateIndex": 999999, "ModifyIndex": 999999},
    })  # fmt: skip
    c = _client(loom_server)
    if status == 200:
        index, _ = c.catalog.service("idx")
        assert _service(c, "idx-4")[1] <= int(index) < 999999
        assert _node(c, "ix4")[1] <= int(index)
    else:
        assert status == 400
        _, nodes = c.catalog.service("idx")
        assert all(n["ServiceID"] != "idx-4" for n in nodes)


def test_indexes_survive_a_sigkill_and_restart(tmp_path: Path) -> None:
    server = start_server(data_dir=tmp_path)
    try:
        _register(server, "ix5", "idx-5")
        _register(server, "ix6", "idx-6")
        c = _client(server)
        before = (_service(c, "idx-5"), _check(c, "idx-5"), _node(c, "ix5"), _service(c, "idx-6"))
        server.kill()
    finally:
        server.stop()
    server = start_server(data_dir=tmp_path)
    try:
        c = _client(server)
        assert (_service(c, "idx-5"), _check(c, "idx-5"), _node(c, "ix5"),
                _service(c, "idx-6")) == before  # fmt: skip
    finally:
        server.stop()


def test_each_service_check_carries_its_services_tags_and_a_node_check_none(
    loom_server: ServerProcess,
) -> None:
    loom_server.put("/v1/catalog/register", {
        "Node": "ix7", "Address": "10.3.0.7",
        "Service": {"Service": "tagged", "ID": "tagged-1", "Port": 80, "Tags": ["a", "b"]},
        "Checks": [{"CheckID": "svc", "Name": "svc", "Status": "passing", "ServiceID": "tagged-1"}],
    })  # fmt: skip
    loom_server.put("/v1/catalog/register", {"Node": "ix7", "Address": "10.3.0.7", "Checks": [
        {"CheckID": "node", "Name": "node", "Status": "passing"}]})  # fmt: skip
    c = _client(loom_server)
    _, checks = c.health.checks("tagged")
    assert [(x["CheckID"], x["ServiceTags"]) for x in checks] == [("svc", ["a", "b"])]
    _, [entry] = c.health.service("tagged")
    assert {x["CheckID"]: x["ServiceTags"] for x in entry["Checks"]} == {
        "svc": ["a", "b"], "node": []
    }
    _, by_node = c.health.node("ix7")
    assert {x["CheckID"]: x["ServiceTags"] for x in by_node} == {"svc": ["a", "b"], "node": []}
