"""Catalog and health reads by node, by state, of Connect endpoints and of gateways, against a
real `loom server`: through py-consul where it has the call, raw HTTP otherwise, and one golden
file of request/response pairs (indexes masked) for the whole family.

Also the parameters every read takes as Consul does: repeated ``?tag=`` (all must match),
repeated ``?node-meta=``, the ``X-Consul-Namespace`` header as ``?ns=``, an unknown ``?dc=``
(500 ``No path to datacenter``), conflicting consistency modes (400) and a wrong method on a
known path (405 with ``Allow``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import consul
import pytest

from tests.support.server import ServerProcess, start_server


def _client(server: ServerProcess) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


def _seed(server: ServerProcess) -> None:
    """Two nodes of different racks, a service with checks on each, a sidecar and a
    Connect-native service on the server's own node, and one service in namespace ``team``."""
    for node, rack, status in (("n1", "r1", "critical"), ("n2", "r2", "passing")):
        server.put(
            "/v1/catalog/register",
            {
                "Node": node,
                "Address": f"10.0.0.{node[1]}",
                "NodeMeta": {"rack": rack},
                "Service": {"Service": "db", "ID": "db1", "Port": 5432, "Tags": ["a", rack]},
                "Checks": [
                    {"CheckID": "db-alive", "Name": "alive", "Status": status, "ServiceID": "db1"},
                    {"CheckID": "disk", "Name": "disk", "Status": "warning"},
                ],
            },
        )
    server.put(
        "/v1/agent/service/register",
        {"Name": "web", "Port": 80, "Tags": ["v1"], "Connect": {"SidecarService": {}}},
    )
    server.put("/v1/agent/service/register", {"Name": "native", "Port": 81, "Connect": {"Native": True}})
    server.put(
        "/v1/catalog/register",
        {"Node": "n1", "Address": "10.0.0.1", "NodeMeta": {"rack": "r1"},
         "Service": {"Service": "db", "ID": "db-team", "Port": 5433, "Namespace": "team"}},
    )  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = start_server()
    try:
        _seed(s)
        yield s
    finally:
        s.stop()


def _status(server: ServerProcess, method: str, path: str, **headers: str) -> tuple[int, Any, Any]:
    return server.request(method, path, b"" if method != "GET" else None, headers)


# -- the endpoints, through py-consul ------------------------------------------------------------


def test_catalog_node_lists_a_node_and_its_services_and_null_for_an_unknown_one(server) -> None:  # type: ignore[no-untyped-def]
    c = _client(server)
    index, found = c.catalog.node("n1")
    assert int(index) > 0
    assert found["Node"]["Node"] == "n1" and found["Node"]["Meta"] == {"rack": "r1"}
    assert set(found["Services"]) == {"db1"}
    assert found["Services"]["db1"]["Tags"] == ["a", "r1"]
    _, own = c.catalog.node("loom-server")
    assert set(own["Services"]) == {"consul", "web", "web-sidecar-proxy", "native"}
    assert own["Services"]["consul"]["Port"] == 8300  # the server's own service
    assert c.catalog.node("nowhere")[1] is None


def test_catalog_node_services_lists_the_services_of_a_node(server) -> None:  # type: ignore[no-untyped-def]
    got = server.get("/v1/catalog/node-services/n2")
    assert got["Node"]["Node"] == "n2" and [s["ID"] for s in got["Services"]] == ["db1"]
    assert server.get("/v1/catalog/node-services/nowhere") == {"Node": None, "Services": []}


def test_catalog_node_takes_the_namespace_from_the_header_as_from_ns(server) -> None:  # type: ignore[no-untyped-def]
    by_query = server.get("/v1/catalog/node/n1?ns=team")
    _, by_header, _ = server.request("GET", "/v1/catalog/node/n1", None, {"X-Consul-Namespace": "team"})
    assert set(by_query["Services"]) == set(by_header["Services"]) == {"db-team"}
    assert set(server.get("/v1/catalog/node/n1?ns=*")["Services"]) == {"db1", "db-team"}


def test_catalog_connect_lists_sidecars_and_connect_native_instances(server) -> None:  # type: ignore[no-untyped-def]
    c = _client(server)
    _, web = c.catalog.connect("web")
    assert [(n["ServiceID"], n["ServiceKind"]) for n in web] == [("web-sidecar-proxy", "connect-proxy")]
    _, native = c.catalog.connect("native")
    assert [n["ServiceID"] for n in native] == ["native"]
    assert c.catalog.connect("db")[1] == []


def test_gateway_services_is_empty_for_loom_has_no_gateway_entries(server) -> None:  # type: ignore[no-untyped-def]
    assert _client(server).catalog.gateway_services("ingress") == []


def test_health_node_lists_the_node_checks_and_its_instances_checks(server) -> None:  # type: ignore[no-untyped-def]
    c = _client(server)
    _, checks = c.health.node("n1")
    assert sorted((k["CheckID"], k["Status"]) for k in checks) == [
        ("db-alive", "critical"),
        ("disk", "warning"),
    ]
    assert c.health.node("nowhere")[1] == []


def test_health_state_selects_checks_by_status_and_node_meta(server) -> None:  # type: ignore[no-untyped-def]
    c = _client(server)
    _, critical = c.health.state("critical")
    # The server's own sidecar (web-sidecar-proxy) has Consul's two default checks, critical
    # until a dataplane reports: everything else critical is n1's db-alive.
    sidecar = {(k["Node"], k["CheckID"]) for k in critical if k["ServiceID"] == "web-sidecar-proxy"}
    assert sidecar == {("loom-server", "service:web-sidecar-proxy:1"),
                       ("loom-server", "service:web-sidecar-proxy:2")}  # fmt: skip
    assert [(k["Node"], k["CheckID"]) for k in critical if (k["Node"], k["CheckID"]) not in sidecar] == [
        ("n1", "db-alive")
    ]
    _, warning = c.health.state("warning")
    assert [(k["Node"], k["CheckID"]) for k in warning] == [("n1", "disk"), ("n2", "disk")]
    _, passing = c.health.state("passing")
    assert [(k["Node"], k["CheckID"]) for k in passing] == [("n2", "db-alive")]
    _, anything = c.health.state("any", node_meta={"rack": "r2"})
    assert sorted(k["CheckID"] for k in anything) == ["db-alive", "disk"]
    assert server.get("/v1/health/state/bogus") == []


def test_each_new_read_takes_a_filter_on_its_own_fields(server) -> None:  # type: ignore[no-untyped-def]
    c = _client(server)
    assert set(c.catalog.node("n1", filter_expr="Port == 5432")[1]["Services"]) == {"db1"}
    assert c.catalog.node("n1", filter_expr="Port == 1")[1]["Services"] == {}
    got = server.get("/v1/catalog/node-services/loom-server?filter=Service%20%3D%3D%20native")
    assert [s["ID"] for s in got["Services"]] == ["native"]
    assert c.catalog.connect("web", filter_expr="ServicePort == 1")[1] == []
    assert [k["CheckID"] for k in c.health.node("n1", filter_expr="Status == warning")[1]] == ["disk"]
    assert [k["Node"] for k in c.health.state("any", filter_expr="ServiceID == db1 and Status == passing")[1]] == ["n2"]
    status, text, _ = server.request("GET", "/v1/health/state/any?filter=Nope%20%3D%3D%201")
    assert status == 400 and "Failed to create boolean expression evaluator" in text
    status, _, _ = server.request("GET", "/v1/catalog/gateway-services/gw?filter=Port%20%3D%3D%20x")
    assert status == 400


# -- the parameters every read takes ---------------------------------------------------------


def test_every_tag_given_must_match(server) -> None:  # type: ignore[no-untyped-def]
    assert [n["Node"] for n in server.get("/v1/catalog/service/db?tag=a&tag=r2")] == ["n2"]
    assert server.get("/v1/catalog/service/db?tag=a&tag=missing") == []
    assert len(server.get("/v1/catalog/service/db?tag=a")) == 2
    assert [e["Node"]["Node"] for e in server.get("/v1/health/service/db?tag=r1&tag=a")] == ["n1"]


def test_every_node_meta_pair_given_must_match(server) -> None:  # type: ignore[no-untyped-def]
    c = _client(server)
    assert [n["Node"] for n in c.catalog.nodes(node_meta={"rack": "r1"})[1]] == ["n1"]
    assert [n["Node"] for n in c.catalog.service("db", node_meta={"rack": "r2"})[1]] == ["n2"]
    assert [e["Node"]["Node"] for e in c.health.service("db", node_meta={"rack": "r1"})[1]] == ["n1"]
    assert server.get("/v1/catalog/nodes?node-meta=rack:r1&node-meta=rack:r2") == [
        n for n in server.get("/v1/catalog/nodes?node-meta=rack:r2")
    ]
    assert server.get("/v1/catalog/services?node-meta=rack:r9") == {}
    assert set(server.get("/v1/catalog/services?node-meta=rack:r2")) == {"db"}


def test_an_unknown_datacenter_has_no_path_and_our_own_is_served(server) -> None:  # type: ignore[no-untyped-def]
    for path in ("/v1/catalog/nodes", "/v1/health/node/n1", "/v1/catalog/node/n1"):
        assert _status(server, "GET", f"{path}?dc=elsewhere")[:2] == (500, "No path to datacenter")
        assert _status(server, "GET", f"{path}?dc=dc1")[0] == 200
    with pytest.raises(consul.ConsulException, match="No path to datacenter"):
        _client(server).catalog.nodes(dc="elsewhere")


def test_conflicting_consistency_modes_are_refused(server) -> None:  # type: ignore[no-untyped-def]
    status, text, _ = _status(server, "GET", "/v1/health/state/any?stale&consistent")
    assert (status, text) == (400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    status, text, _ = _status(server, "GET", "/v1/catalog/nodes?cached&consistent")
    assert status == 400 and "?cached with ?consistent" in text
    for mode in ("stale", "consistent", "cached"):
        assert _status(server, "GET", f"/v1/catalog/nodes?{mode}")[0] == 200


def test_a_wrong_method_on_a_known_path_is_405_with_allow(server) -> None:  # type: ignore[no-untyped-def]
    for method, path in (("PUT", "/v1/catalog/node/n1"), ("DELETE", "/v1/health/state/any"),
                         ("POST", "/v1/catalog/nodes"), ("GET", "/v1/catalog/register")):  # fmt: skip
        status, _, headers = _status(server, method, path)
        assert status == 405, (method, path)
        assert headers["Allow"], (method, path)
    assert _status(server, "GET", "/v1/catalog/nope")[0] == 404


def test_health_node_is_a_blocking_query_woken_by_a_check_change() -> None:
    s = start_server()
    try:
        s.put("/v1/catalog/register", {"Node": "n1", "Address": "10.0.0.1",
                                       "Check": {"CheckID": "ping", "Name": "ping", "Status": "passing"}})  # fmt: skip
        _, _, headers = s.request("GET", "/v1/health/node/n1")
        index = int(headers["X-Consul-Index"])
        got: dict[str, Any] = {}

        def watch() -> None:
            got["answer"] = s.request("GET", f"/v1/health/node/n1?index={index}&wait=20s")

        watcher = threading.Thread(target=watch)
        watcher.start()
        # The watcher is parked once the server counts it (Loom's own header says so).
        for _ in range(200):
            _, _, h = s.request("GET", "/v1/loom/dns-table")
            if h.get("X-Loom-Blocking-Queries") == "1":
                break
            threading.Event().wait(0.02)
        s.put("/v1/catalog/register", {"Node": "n1", "Address": "10.0.0.1",
                                       "Check": {"CheckID": "ping", "Name": "ping", "Status": "critical"}})  # fmt: skip
        watcher.join(20)
        status, checks, h = got["answer"]
        assert status == 200 and int(h["X-Consul-Index"]) > index
        assert [k["Status"] for k in checks] == ["critical"]
    finally:
        s.stop()


# -- golden request/response pairs -----------------------------------------------------------

GOLDEN_REQUESTS = (
    "/v1/catalog/node/n1",
    "/v1/catalog/node/nowhere",
    "/v1/catalog/node-services/n2",
    "/v1/catalog/connect/web",
    "/v1/catalog/gateway-services/gw",
    "/v1/health/node/n1",
    "/v1/health/state/warning?node-meta=rack:r2",
    "/v1/catalog/nodes?dc=elsewhere",
    "/v1/catalog/nodes?stale&consistent",
)


def _masked(text: str) -> str:
    return re.sub(r'"(CreateIndex|ModifyIndex)": \d+', r'"\1": "<index>"', text)


def test_the_catalog_reads_answer_as_the_golden_file_says(server, golden) -> None:  # type: ignore[no-untyped-def]
    pairs = []
    for path in GOLDEN_REQUESTS:
        status, body, _ = server.request("GET", path)
        shown = body if isinstance(body, str) else json.dumps(body, indent=2, sort_keys=True)
        pairs.append(f"GET {path}\n{status}\n{_masked(shown)}\n")
    golden.check("http/catalog_reads.txt", "\n".join(pairs))
