"""Prepared-query failover across three federated datacenters of real ``loom server``
processes, judged by Consul's ``queryFailover``: a query that keeps nothing locally runs in
``NearestN`` other datacenters (in ``/v1/catalog/datacenters`` order: there is no RTT), then
``Datacenters`` or ``Targets`` in order, until one has results; the answer's ``Datacenter`` is
the one that answered and ``Failovers`` how many were tried (an unknown or unreachable one
counts only when it is tried). py-consul's ``query.create``/``query.execute`` drive it too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import consul
import pytest

from tests.support.federation import federated, names_all, until_states
from tests.support.server import ServerProcess, start_server

Servers = tuple[ServerProcess, ServerProcess, ServerProcess]


def _register(server: ServerProcess, service: str, node: str, status: str = "passing") -> None:
    sid = f"{service}-{node}"
    server.put(
        "/v1/catalog/register",
        {
            "Node": node,
            "Address": "10.7.0.1",
            "Service": {"Service": service, "ID": sid, "Port": 8080},
            "Checks": [{"CheckID": f"{sid}-c", "Name": "c", "Status": status, "ServiceID": sid}],
        },
    )


@pytest.fixture(scope="module")
def dcs() -> Iterator[Servers]:
    with federated(("dc1", "dc2", "dc3")) as started:
        dc1, dc2, dc3 = started
        # "both": healthy in dc2 and dc3, critical in dc1; "two": only in dc2 (twice);
        # "three": only in dc3; "nowhere": critical everywhere.
        _register(dc1, "both", "a1", "critical")
        _register(dc2, "both", "b1")
        _register(dc3, "both", "c1")
        _register(dc2, "two", "b1")
        _register(dc2, "two", "b2")
        _register(dc3, "three", "c1")
        for server in started:
            _register(server, "nowhere", "z1", "critical")
        yield dc1, dc2, dc3


def _create(server: ServerProcess, body: dict[str, Any]) -> str:
    status, out, _ = server.request("POST", "/v1/query", body)
    assert status == 200, out
    qid: str = out["ID"]
    return qid


def _run(server: ServerProcess, service: str, failover: dict[str, Any], suffix: str = "") -> Any:
    qid = _create(server, {"Service": {"Service": service, "Failover": failover}})
    return server.get(f"/v1/query/{qid}/execute{suffix}")


def _answer(result: Any) -> tuple[str, int, list[str]]:
    nodes = sorted(f"{n['Node']['Datacenter']}/{n['Node']['Node']}" for n in result["Nodes"])
    return result["Datacenter"], result["Failovers"], nodes


def test_local_results_are_answered_without_failing_over(dcs: Servers) -> None:
    _, dc2, _ = dcs
    got = _run(dc2, "both", {"NearestN": 2, "Datacenters": ["dc1", "dc3"]})
    assert _answer(got) == ("dc2", 0, ["dc2/b1"])


def test_datacenters_are_tried_in_their_order_until_one_has_results(dcs: Servers) -> None:
    dc1, _, _ = dcs
    assert _answer(_run(dc1, "both", {"Datacenters": ["dc3", "dc2"]})) == ("dc3", 1, ["dc3/c1"])
    got = _run(dc1, "two", {"Datacenters": ["dc3", "dc2"]})
    assert _answer(got) == ("dc2", 2, ["dc2/b1", "dc2/b2"])
    assert got["Service"] == "two" and got["Namespace"] == "default"


def test_nearest_n_takes_the_other_datacenters_in_catalog_datacenters_order(
    dcs: Servers,
) -> None:
    dc1, _, dc3 = dcs
    assert dc3.get("/v1/catalog/datacenters") == ["dc3", "dc1", "dc2"]
    assert _answer(_run(dc1, "both", {"NearestN": 1})) == ("dc2", 1, ["dc2/b1"])
    assert _answer(_run(dc3, "two", {"NearestN": 1})) == ("dc1", 1, [])
    assert _answer(_run(dc3, "two", {"NearestN": 2})) == ("dc2", 2, ["dc2/b1", "dc2/b2"])
    # NearestN first, then the listed datacenters not already among them.
    got = _run(dc1, "three", {"NearestN": 1, "Datacenters": ["dc2", "dc3"]})
    assert _answer(got) == ("dc3", 2, ["dc3/c1"])


def test_with_no_results_anywhere_the_last_datacenter_tried_answers_empty(
    dcs: Servers,
) -> None:
    dc1, _, _ = dcs
    assert _answer(_run(dc1, "nowhere", {"NearestN": 5})) == ("dc3", 2, [])
    assert _answer(_run(dc1, "nowhere", {})) == ("dc1", 0, [])


def test_unknown_datacenters_and_the_local_one_are_skipped_uncounted(dcs: Servers) -> None:
    dc1, _, _ = dcs
    got = _run(dc1, "two", {"Datacenters": ["nowhere", "dc1", "dc2"]})
    assert _answer(got) == ("dc2", 1, ["dc2/b1", "dc2/b2"])


def test_targets_fail_over_by_datacenter_and_a_peer_target_is_refused(dcs: Servers) -> None:
    dc1, _, _ = dcs
    got = _run(dc1, "both", {"Targets": [{"Datacenter": "dc3"}, {"Datacenter": "dc2"}]})
    assert _answer(got) == ("dc3", 1, ["dc3/c1"])
    bad = [
        ({"Targets": [{"Peer": "other-cluster"}]}, "peering is not supported"),
        (
            {"NearestN": 1, "Targets": [{"Datacenter": "dc2"}]},
            "Targets cannot be populated with NearestN or Datacenters",
        ),
        (
            {"Datacenters": ["dc2"], "Targets": [{"Datacenter": "dc2"}]},
            "Targets cannot be populated with NearestN or Datacenters",
        ),
        ({"NearestN": -1}, "Bad NearestN '-1', must be >= 0"),
    ]
    before = dc1.get("/v1/query")
    for failover, words in bad:
        body = {"Name": "bad-failover", "Service": {"Service": "both", "Failover": failover}}
        status, out, _ = dc1.request("POST", "/v1/query", body)
        assert status == 400 and words in out, (failover, status, out)
    assert dc1.get("/v1/query") == before


def test_the_limit_applies_in_the_datacenter_failed_over_to(dcs: Servers) -> None:
    dc1, _, _ = dcs
    got = _run(dc1, "two", {"Datacenters": ["dc2"]}, "?limit=1")
    assert got["Datacenter"] == "dc2" and got["Failovers"] == 1 and len(got["Nodes"]) == 1


def test_a_template_fails_over_with_the_service_it_rendered(dcs: Servers) -> None:
    dc1, _, _ = dcs
    _create(
        dc1,
        {
            "Name": "geo-",
            "Template": {"Type": "name_prefix_match"},
            "Service": {"Service": "${name.suffix}", "Failover": {"NearestN": 2}},
        },
    )
    got = dc1.get("/v1/query/geo-three/execute")
    assert (_answer(got), got["Service"]) == (("dc3", 2, ["dc3/c1"]), "three")


def test_explain_shows_the_failover_configuration(dcs: Servers) -> None:
    dc1, _, _ = dcs
    qid = _create(
        dc1,
        {
            "Name": "explained",
            "Service": {"Service": "both", "Failover": {"Targets": [{"Datacenter": "dc3"}]}},
        },
    )
    got = dc1.get(f"/v1/query/{qid}/explain")["Query"]["Service"]["Failover"]
    assert got == {"NearestN": 0, "Datacenters": None,
                   "Targets": [{"Peer": "", "Datacenter": "dc3"}]}  # fmt: skip
    [stored] = dc1.get(f"/v1/query/{qid}")
    assert stored["Service"]["Failover"] == got


def test_py_consul_creates_and_executes_a_query_that_fails_over(dcs: Servers) -> None:
    dc1, _, _ = dcs
    host, port = dc1.http.rsplit(":", 1)
    c = consul.Consul(host=host, port=int(port))
    made = c.query.create("three", name="pyc-failover", nearestn=1, datacenters=["dc3"])
    got = c.query.execute(made["ID"])
    assert _answer(got) == ("dc3", 2, ["dc3/c1"])
    assert c.query.execute("pyc-failover", limit=1)["Datacenter"] == "dc3"
    near = c.query.create("both", name="pyc-nearest", nearestn=1)
    assert _answer(c.query.execute(near["ID"])) == ("dc2", 1, ["dc2/b1"])


def test_an_unreachable_datacenter_counts_as_tried_and_the_next_one_answers(
    dcs: Servers,
) -> None:
    # Last in this module: dc4 stays known (unreachable) to dc1 afterwards.
    dc1, _, _ = dcs
    dc4 = start_server("--datacenter", "dc4", "--primary-datacenter", "dc1",
                       "--join-wan", dc1.http)  # fmt: skip
    try:
        until_states(dc1, names_all("dc1", "dc2", "dc3", "dc4"))
        _register(dc4, "two", "d1")
    finally:
        dc4.stop()
    got = _run(dc1, "two", {"Datacenters": ["dc4", "dc2"]})
    assert _answer(got) == ("dc2", 2, ["dc2/b1", "dc2/b2"])
    assert _answer(_run(dc1, "two", {"Datacenters": ["dc4"]})) == ("dc1", 1, [])
