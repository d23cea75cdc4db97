"""Prepared query results are shuffled on each execution, as Consul shuffles them, unless
``Near`` sorts them (its node first, the rest in catalog order); ``?limit`` applies after.
Against a real `loom server`, through py-consul."""

from __future__ import annotations

import consul

from tests.support.server import ServerProcess


def _client(server: ServerProcess) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


def _seed(server: ServerProcess, n: int = 6) -> None:
    for i in range(n):
        server.put("/v1/catalog/register", {
            "Node": f"sh{i}", "Address": f"10.8.0.{i + 1}",
            "Service": {"Service": "shuf", "ID": f"shuf-{i}", "Port": 80},
        })  # fmt: skip


def test_each_execution_shuffles_the_results_and_keeps_every_instance(
    loom_server: ServerProcess,
) -> None:
    _seed(loom_server)
    c = _client(loom_server)
    qid = c.query.create("shuf", name="shuffled")["ID"]
    orders = set()
    for _ in range(40):
        nodes = [n["Node"]["Node"] for n in c.query.execute(qid)["Nodes"]]
        assert sorted(nodes) == [f"sh{i}" for i in range(6)]
        orders.add(tuple(nodes))
        if len(orders) > 1:
            break
    assert len(orders) > 1  # 40 identical orders of 6 would be a 1 in 720**39 chance
    firsts = {c.query.execute(qid, limit=1)["Nodes"][0]["Node"]["Node"] for _ in range(60)}
    assert len(firsts) > 1  # the limit takes the first of a shuffled list


def test_near_sorts_its_node_first_and_the_rest_in_catalog_order_every_time(
    loom_server: ServerProcess,
) -> None:
    _seed(loom_server)
    c = _client(loom_server)
    # (py-consul's query.create has no Near: raw HTTP for it)
    qid = loom_server.request("POST", "/v1/query", {"Name": "near-sh3", "Service": {
        "Service": "shuf", "Near": "sh3"}})[1]["ID"]  # fmt: skip
    for _ in range(10):
        nodes = [n["Node"]["Node"] for n in c.query.execute(qid)["Nodes"]]
        assert nodes == ["sh3", "sh0", "sh1", "sh2", "sh4", "sh5"]
    _, out, _ = loom_server.request("GET", f"/v1/query/{qid}/execute?near=sh5")
    nodes = [n["Node"]["Node"] for n in out["Nodes"]]
    assert nodes[0] == "sh5"
