"""Three datacenters of real ``loom server`` processes on loopback: WAN join (both ways and
through a third), ``?dc=`` on every kind of endpoint, replication from the primary and the
forwarding of a secondary's replicated writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import consul
import pytest

from tests.support.federation import federated, until_blocking, until_states
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def dcs() -> Iterator[tuple[ServerProcess, ServerProcess, ServerProcess]]:
    with federated(("dc1", "dc2", "dc3"), join_previous=True) as (dc1, dc2, dc3):
        yield dc1, dc2, dc3


def test_datacenters_learn_each_other_both_ways_and_through_a_third(dcs: Any) -> None:
    dc1, dc2, dc3 = dcs
    assert dc1.get("/v1/catalog/datacenters") == ["dc1", "dc2", "dc3"]
    assert dc2.get("/v1/catalog/datacenters") == ["dc2", "dc1", "dc3"]
    assert dc3.get("/v1/catalog/datacenters") == ["dc3", "dc1", "dc2"]
    one = dc1.get("/v1/internal/federation-state/dc3")["State"]
    assert one["Servers"] == [dc3.http]
    status, _, _ = dc1.request("GET", "/v1/internal/federation-state/dc9")
    assert status == 404


def test_a_service_registered_in_one_datacenter_is_in_its_published_state(dcs: Any) -> None:
    dc1, dc2, _ = dcs
    dc2.put("/v1/agent/service/register", {"Name": "published", "Port": 7070})
    states = until_states(
        dc1,
        lambda ss: any(
            s["Datacenter"] == "dc2" and any(v["Name"] == "published" for v in s["Services"])
            for s in ss
        ),
    )
    dc2_state = next(s for s in states if s["Datacenter"] == "dc2")
    svc = next(v for v in dc2_state["Services"] if v["Name"] == "published")
    assert svc["Ports"] == [7070] and svc["Addresses"] == ["127.0.0.1"] and not svc["Meshed"]


def test_dc_reads_and_writes_of_catalog_health_kv_and_queries_reach_that_datacenter(
    dcs: Any,
) -> None:
    dc1, dc2, _ = dcs
    dc1.put("/v1/agent/service/register?dc=dc2", {"Name": "api", "Port": 9090})
    assert dc1.get("/v1/catalog/service/api") == []  # written in dc2, not here
    assert [i["ServicePort"] for i in dc2.get("/v1/catalog/service/api")] == [9090]
    [inst] = dc1.get("/v1/catalog/service/api?dc=dc2")
    assert inst["Datacenter"] == "dc2" and inst["ServicePort"] == 9090
    assert [e["Service"]["ID"] for e in dc1.get("/v1/health/service/api?dc=dc2")] == ["api"]
    assert "api" in dc1.get("/v1/catalog/services?dc=dc2")
    assert dc1.put("/v1/kv/where?dc=dc2", b"dc2") is True
    status, _, _ = dc1.request("GET", "/v1/kv/where")
    assert status == 404
    [entry] = dc1.get("/v1/kv/where?dc=dc2")
    assert entry["Key"] == "where"
    qid = dc1.request("POST", "/v1/query?dc=dc2", {"Name": "api-q", "Service": {"Service": "api"}})
    assert qid[0] == 200
    done = dc1.get("/v1/query/api-q/execute?dc=dc2")
    assert done["Datacenter"] == "dc2" and [n["Service"]["ID"] for n in done["Nodes"]] == ["api"]


def test_dc_reads_of_config_and_intentions_answer_from_that_datacenter(dcs: Any) -> None:
    dc1, _, dc3 = dcs
    dc1.put("/v1/config", {"Kind": "service-defaults", "Name": "cfg-read", "Protocol": "grpc"})
    dc1.put("/v1/connect/intentions/exact?source=a&destination=cfg-read", {"Action": "deny"})
    # dc3 has them once replicated; read there through dc1's ?dc=
    until_blocking(dc3, "/v1/config/service-defaults", lambda es: any(
        e["Name"] == "cfg-read" for e in es))  # fmt: skip
    entry = dc1.get("/v1/config/service-defaults/cfg-read?dc=dc3")
    assert entry["Protocol"] == "grpc"
    until_blocking(dc3, "/v1/connect/intentions", lambda xs: any(
        x["DestinationName"] == "cfg-read" for x in xs))  # fmt: skip
    found = dc1.get("/v1/connect/intentions/exact?source=a&destination=cfg-read&dc=dc3")
    assert found["Action"] == "deny"


def test_a_forwarded_blocking_query_keeps_blocking_and_wakes_on_the_remote_write(
    dcs: Any,
) -> None:
    dc1, dc2, _ = dcs
    dc2.put("/v1/kv/block", b"before")
    _, _, headers = dc1.request("GET", "/v1/kv/block?dc=dc2")
    index = int(headers["X-Consul-Index"])
    answer: dict[str, Any] = {}
    started = threading.Event()

    def wait() -> None:
        started.set()
        t0 = time.monotonic()
        answer["status"], answer["body"], answer["headers"] = dc1.request(
            "GET", f"/v1/kv/block?dc=dc2&index={index}&wait=20s&raw"
        )
        answer["took"] = time.monotonic() - t0

    thread = threading.Thread(target=wait)
    thread.start()
    started.wait()
    thread.join(0.5)
    assert thread.is_alive()  # still blocked: nothing changed yet
    dc2.put("/v1/kv/block", b"after")
    thread.join(15)
    assert not thread.is_alive()
    assert answer["status"] == 200 and answer["body"] == "after"
    assert int(answer["headers"]["X-Consul-Index"]) > index and answer["took"] < 15


def test_an_unknown_datacenter_is_no_path_to_datacenter(dcs: Any) -> None:
    dc1, _, _ = dcs
    status, body, _ = dc1.request("GET", "/v1/catalog/services?dc=dc9")
    assert (status, body) == (500, "No path to datacenter")
    # a request already forwarded twice is not sent on again (no circles)
    status, body, _ = dc1.request("GET", "/v1/catalog/services?dc=dc2",
                                  headers={"X-Loom-Hops": "2"})  # fmt: skip
    assert (status, body) == (500, "No path to datacenter")
    assert dc1.request("GET", "/v1/catalog/services?dc=dc2", headers={"X-Loom-Hops": "1"})[0] == 200


def test_py_consul_reads_another_datacenter_with_dc(dcs: Any) -> None:
    dc1, dc2, _ = dcs
    host, port = dc1.http.rsplit(":", 1)
    c = consul.Consul(host=host, port=int(port))
    dc2.put("/v1/agent/service/register", {"Name": "pyc", "Port": 1234})
    _, services = c.catalog.services(dc="dc2")
    assert "pyc" in services
    _, nodes = c.catalog.service("pyc", dc="dc2")
    assert nodes[0]["Datacenter"] == "dc2"
    assert c.kv.put("pyc-key", "v", dc="dc2")
    _, got = c.kv.get("pyc-key", dc="dc2")
    assert got is not None and got["Value"] == b"v"
    assert c.kv.get("pyc-key")[1] is None


def test_an_intention_and_a_config_entry_written_in_the_primary_reach_every_secondary(
    dcs: Any,
) -> None:
    dc1, dc2, dc3 = dcs
    dc1.put("/v1/connect/intentions/exact?source=web&destination=repl", {"Action": "deny"})
    dc1.put("/v1/config", {"Kind": "proxy-defaults", "Name": "global",
                           "Config": {"protocol": "http"}})  # fmt: skip
    for server in (dc2, dc3):
        until_blocking(server, "/v1/connect/intentions", lambda xs: any(
            x["DestinationName"] == "repl" and x["Action"] == "deny" for x in xs))  # fmt: skip
        entry = until_blocking(server, "/v1/config/proxy-defaults/global", lambda e: True)
        assert entry["Config"] == {"protocol": "http"}
        checked = server.get("/v1/connect/intentions/check?source=web&destination=repl")
        assert checked["Allowed"] is False
        status = server.get("/v1/loom/replication")
        assert status["Enabled"] and status["Running"] and status["SourceDatacenter"] == "dc1"
        assert status["ReplicatedIndex"] > 0 and status["LastSuccess"] > "2000"
    dc1.request("DELETE", "/v1/connect/intentions/exact?source=web&destination=repl")
    until_blocking(dc2, "/v1/connect/intentions", lambda xs: all(
        x["DestinationName"] != "repl" for x in xs))  # fmt: skip
    assert dc1.get("/v1/loom/replication")["Enabled"] is False  # the primary replicates nothing


def test_writes_of_replicated_kinds_to_a_secondary_go_to_the_primary_and_read_back_at_once(
    dcs: Any,
) -> None:
    dc1, dc2, _ = dcs
    dc2.put("/v1/config", {"Kind": "service-defaults", "Name": "fwd", "Protocol": "http"})
    assert dc1.get("/v1/config/service-defaults/fwd")["Protocol"] == "http"
    assert dc2.get("/v1/config/service-defaults/fwd")["Protocol"] == "http"  # read-your-write
    status, created, _ = dc2.request(
        "POST", "/v1/connect/intentions",
        {"SourceName": "x", "DestinationName": "fwd", "Action": "allow"},
    )  # fmt: skip
    assert status == 200, created
    assert dc1.get(f"/v1/connect/intentions/{created['ID']}")["Action"] == "allow"
    assert dc2.get(f"/v1/connect/intentions/{created['ID']}")["Action"] == "allow"
    status, _, _ = dc2.request("DELETE", f"/v1/connect/intentions/{created['ID']}")
    assert status == 200
    assert dc2.request("GET", f"/v1/connect/intentions/{created['ID']}")[0] == 404
    assert dc1.request("GET", f"/v1/connect/intentions/{created['ID']}")[0] == 404
    # a write for dc2 sent to dc1 goes to dc2, which sends it back to dc1 (the primary) once
    dc1.put("/v1/config?dc=dc2", {"Kind": "service-defaults", "Name": "fwd2"})
    assert dc1.get("/v1/config/service-defaults/fwd2")["Name"] == "fwd2"
    assert dc2.get("/v1/config/service-defaults/fwd2")["Name"] == "fwd2"
    status, _, _ = dc2.request("DELETE", "/v1/config/service-defaults/fwd")
    assert status == 200
    assert dc1.request("GET", "/v1/config/service-defaults/fwd")[0] == 404
    assert dc2.request("GET", "/v1/config/service-defaults/fwd")[0] == 404
