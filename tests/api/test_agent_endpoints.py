"""The agent endpoints about the server, and hash-based blocking on one service, against a
real `loom server` (py-consul where it has the call), with an ACL attacker for each and a
golden file of the members and version answers."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import consul
import pytest

from tests.support.server import ServerProcess, start_server
from tests.support.server import acl_server as running_acl_server


def _client(server: ServerProcess, token: str | None = None) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port), token=token)


def _parked(server: ServerProcess, count: int) -> None:
    """Return once the server counts ``count`` blocking queries in flight."""
    for _ in range(500):
        _, _, headers = server.request("GET", "/v1/loom/dns-table")
        if headers.get("X-Loom-Blocking-Queries") == str(count):
            return
        threading.Event().wait(0.01)
    raise AssertionError("the blocking query never parked")


@pytest.fixture(scope="module")
def quiet() -> Iterator[ServerProcess]:
    """One server for the tests that only read what the server says of itself."""
    s = start_server()
    try:
        yield s
    finally:
        s.stop()


def test_members_shows_the_server_as_an_alive_consul_server(quiet) -> None:  # type: ignore[no-untyped-def]
    members = _client(quiet).agent.members()
    assert [(m["Name"], m["Status"], m["Tags"]["role"], m["Tags"]["dc"]) for m in members] == [
        ("loom-server", 1, "consul", "dc1")
    ]
    assert members[0]["Port"] == 8301 and members[0]["Addr"] == "127.0.0.1"
    wan = _client(quiet).agent.members(wan=True)
    assert [(m["Name"], m["Port"]) for m in wan] == [("loom-server.dc1", 8302)]


def test_version_says_it_is_loom(quiet) -> None:  # type: ignore[no-untyped-def]
    import loom

    got = quiet.get("/v1/agent/version")
    assert got["Version"] == loom.__version__ and got["HumanVersion"].startswith("loom ")


def test_host_reports_this_machine(quiet) -> None:  # type: ignore[no-untyped-def]
    import os
    import socket

    got = quiet.get("/v1/agent/host")
    assert got["Errors"] is None, got["Errors"]
    assert got["Host"]["hostname"] == socket.gethostname() and got["Host"]["os"] == "linux"
    assert len(got["CPU"]) == os.cpu_count()
    assert got["Memory"]["total"] >= got["Memory"]["available"] > 0
    assert got["Disk"]["total"] >= got["Disk"]["free"] > 0
    assert got["CollectionTime"] > 0


def test_metrics_count_what_the_catalog_holds(loom_server) -> None:  # type: ignore[no-untyped-def]
    c = _client(loom_server)
    c.agent.service.register("web", port=80)
    c.agent.service.register("web", service_id="web-2", port=81)
    c.agent.service.register("db", port=82)
    got = c.agent.metrics()
    gauges = {g["Name"]: g["Value"] for g in got["Gauges"]}
    assert gauges["consul.state.services"] == 3  # with the server's own consul service
    assert gauges["consul.state.service_instances"] == 4
    assert gauges["consul.state.nodes"] == 1
    assert got["Counters"] == [] and got["Samples"] == [] and got["Timestamp"].endswith(" UTC")
    status, text, headers = loom_server.request("GET", "/v1/agent/metrics?format=prometheus")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert "consul_state_service_instances 4\n" in text


def test_a_service_answer_carries_its_content_hash_in_body_and_header(loom_server) -> None:  # type: ignore[no-untyped-def]
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 80})
    status, body, headers = loom_server.request("GET", "/v1/agent/service/web")
    assert status == 200 and body["ContentHash"] == headers["X-Consul-ContentHash"]
    assert len(body["ContentHash"]) == 16
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 81})
    assert loom_server.get("/v1/agent/service/web")["ContentHash"] != body["ContentHash"]
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 80})
    assert loom_server.get("/v1/agent/service/web")["ContentHash"] == body["ContentHash"]


def test_the_content_hash_is_the_same_on_another_server_process() -> None:
    hashes = []
    for _ in range(2):
        s = start_server()
        try:
            s.put("/v1/agent/service/register", {"Name": "web", "Port": 80, "Tags": ["v1"]})
            hashes.append(s.get("/v1/agent/service/web")["ContentHash"])
        finally:
            s.stop()
    assert hashes[0] == hashes[1]


def test_a_hash_blocking_query_waits_for_its_service_to_change(loom_server) -> None:  # type: ignore[no-untyped-def]
    s = loom_server
    s.put("/v1/agent/service/register", {"Name": "web", "Port": 80})
    s.put("/v1/agent/service/register", {"Name": "other", "Port": 90})
    first = s.get("/v1/agent/service/web")["ContentHash"]
    got: dict[str, Any] = {}

    def watch() -> None:
        got["answer"] = s.request("GET", f"/v1/agent/service/web?hash={first}&wait=20s")

    watcher = threading.Thread(target=watch)
    watcher.start()
    _parked(s, 1)
    s.put("/v1/agent/service/register", {"Name": "other", "Port": 91})  # not web: still parked
    _parked(s, 1)
    assert "answer" not in got
    s.put("/v1/agent/service/register", {"Name": "web", "Port": 8080})
    watcher.join(20)
    status, body, headers = got["answer"]
    assert status == 200 and body["Port"] == 8080
    assert headers["X-Consul-ContentHash"] == body["ContentHash"] != first


def test_a_hash_blocking_query_ends_at_its_wait_with_the_same_hash(loom_server) -> None:  # type: ignore[no-untyped-def]
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 80})
    first = loom_server.get("/v1/agent/service/web")["ContentHash"]
    status, body, _ = loom_server.request("GET", f"/v1/agent/service/web?hash={first}&wait=200ms")
    assert status == 200 and body["ContentHash"] == first
    assert loom_server.request("GET", f"/v1/agent/service/web?hash={first}&wait=x")[0] == 400
    assert loom_server.request("GET", "/v1/agent/service/nope?hash=abc")[0] == 404


def test_members_and_version_answer_as_the_golden_file_says(quiet, golden) -> None:  # type: ignore[no-untyped-def]
    import loom

    pairs = []
    for path in ("/v1/agent/members", "/v1/agent/members?wan=1", "/v1/agent/version"):
        status, body, _ = quiet.request("GET", path)
        text = json.dumps(body, indent=2, sort_keys=True).replace(loom.__version__, "<version>")
        pairs.append(f"GET {path}\n{status}\n{text}\n")
    golden.check("http/agent.txt", "\n".join(pairs))


# -- ACLs ------------------------------------------------------------------------------------

ROOT = str(uuid.uuid4())
FILTERED = "X-Consul-Results-Filtered-By-ACLs"


@pytest.fixture(scope="module")
def acl_server() -> Iterator[tuple[ServerProcess, str]]:
    mgmt = {"X-Consul-Token": ROOT}
    with running_acl_server(ROOT) as server:
        rules = 'service "a" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
        assert server.request("PUT", "/v1/acl/policy", {"Name": "a", "Rules": rules}, mgmt)[0] == 200
        _, token, _ = server.request("PUT", "/v1/acl/token", {"Policies": [{"Name": "a"}]}, mgmt)
        for name in ("a", "b"):
            body = {"Name": name, "Port": 80}
            assert server.request("PUT", "/v1/agent/service/register", body, mgmt)[0] == 200
        yield server, token["SecretID"]


def _as(server: ServerProcess, path: str, token: str | None) -> tuple[int, Any, dict[str, str]]:
    return server.request("GET", path, None, {"X-Consul-Token": token} if token else {})


def test_members_are_hidden_from_a_token_without_node_read(acl_server) -> None:  # type: ignore[no-untyped-def]
    server, user = acl_server
    status, members, headers = _as(server, "/v1/agent/members", None)
    assert (status, members, headers.get(FILTERED)) == (200, [], "true")
    assert [m["Name"] for m in _as(server, "/v1/agent/members", user)[1]] == ["loom-server"]
    assert _as(server, "/v1/agent/members", "garbage")[:2] == (403, "ACL not found\n")


def test_host_needs_operator_read_and_metrics_agent_read(acl_server) -> None:  # type: ignore[no-untyped-def]
    server, user = acl_server
    for path, permission in (("/v1/agent/host", "operator:read"), ("/v1/agent/metrics", "agent:read")):
        for token in (None, user):
            status, text, _ = _as(server, path, token)
            assert status == 403 and f"lacks permission '{permission}'" in text, (path, token)
        assert _as(server, path, ROOT)[0] == 200
    assert _as(server, "/v1/agent/version", None)[0] == 200


def test_a_service_and_its_hash_are_refused_to_a_token_for_another(acl_server) -> None:  # type: ignore[no-untyped-def]
    server, user = acl_server
    assert _as(server, "/v1/agent/service/a", user)[0] == 200
    for path in ("/v1/agent/service/b", "/v1/agent/service/b?hash=0&wait=10s"):
        status, text, _ = _as(server, path, user)
        assert status == 403 and "lacks permission 'service:read' on \"b\"" in text
        assert _as(server, path, None)[0] == 403
