"""Checks that run, against a real `loom server`: HTTP, TCP, gRPC, H2PING, alias and script
probes of real sockets and processes, the agent check endpoints, health by service and
maintenance mode, and py-consul's calls for them.

Every wait is on an event: a blocking query on the checks (``?index=N&wait=``) that returns
when the server writes a check's new state, bounded by a deadline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import consul
import grpc
import pytest

from tests.support.appmesh import HealthApp
from tests.support.server import ServerProcess, start_server


@pytest.fixture
def app() -> Iterator[HealthApp]:
    """The app answering ``ok``, ``/moved`` a redirect to its ``/health``."""
    a = HealthApp(b"ok", redirects={"/moved": "/health"})
    yield a
    a.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = start_server("--enable-script-checks")
    yield s
    s.stop()


def wait_check(
    s: ServerProcess, check_id: str, want: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """The check once ``want`` holds for it, waiting on the agent's checks as a blocking
    query (each answer is a change the server wrote)."""
    deadline = time.monotonic() + timeout
    index = "0"
    while True:
        status, checks, headers = s.request("GET", f"/v1/agent/checks?index={index}&wait=1s")
        assert status == 200
        found = checks.get(check_id)
        if found is not None and want(found):
            return dict(found)
        assert time.monotonic() < deadline, (check_id, found)
        index = headers["X-Consul-Index"]


def status_is(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda c: c["Status"] == status


def register(s: ServerProcess, body: dict[str, Any]) -> None:
    assert s.request("PUT", "/v1/agent/service/register", body)[0] == 200


def test_an_http_check_follows_the_apps_answers_worded_as_consul(
    server: ServerProcess, app: HealthApp
) -> None:
    url = f"http://127.0.0.1:{app.port}/health"
    register(server, {"Name": "web-http", "Port": app.port, "Check": {
        "HTTP": url, "Interval": "1s", "Header": {"X-Probe": ["loom"]}}})  # fmt: skip
    check = wait_check(server, "service:web-http", status_is("passing"))
    assert check["Output"] == f"HTTP GET {url}: 200 OK Output: ok"
    assert check["Type"] == "http" and check["Interval"] == "1s" and check["Timeout"] == "10s"
    assert check["Definition"]["HTTP"] == url
    assert app.seen[-1]["X-Probe"] == "loom"
    app.health, app.body = 429, b"busy"
    check = wait_check(server, "service:web-http", status_is("warning"))
    assert check["Output"] == f"HTTP GET {url}: 429 Too Many Requests Output: busy"
    app.health, app.body = 500, b"broken"
    check = wait_check(server, "service:web-http", status_is("critical"))
    assert check["Output"] == f"HTTP GET {url}: 500 Internal Server Error Output: broken"
    status, entries, _ = server.request("GET", "/v1/health/service/web-http?passing=1")
    assert status == 200 and entries == []
    app.health = 200
    wait_check(server, "service:web-http", status_is("passing"))
    status, entries, _ = server.request("GET", "/v1/health/service/web-http?passing=1")
    assert [e["Service"]["ID"] for e in entries] == ["web-http"]
    server.put("/v1/agent/service/deregister/web-http")


def test_an_http_check_follows_redirects_and_sends_its_method_and_host(
    server: ServerProcess, app: HealthApp
) -> None:
    url = f"http://127.0.0.1:{app.port}/moved"
    register(server, {"Name": "moved", "Check": {
        "HTTP": url, "Interval": "1s", "Header": {"Host": ["api.example"]}}})  # fmt: skip
    check = wait_check(server, "service:moved", status_is("passing"))
    assert check["Output"] == f"HTTP GET {url}: 200 OK Output: ok"
    assert app.seen[-1]["Host"] == "api.example"
    server.put("/v1/agent/service/deregister/moved")


def test_a_tcp_check_passes_while_the_port_listens(
    server: ServerProcess, app: HealthApp
) -> None:
    target = f"127.0.0.1:{app.port}"
    register(server, {"Name": "web-tcp", "Check": {"TCP": target, "Interval": "1s"}})
    check = wait_check(server, "service:web-tcp", status_is("passing"))
    assert check["Output"] == f"TCP connect {target}: Success"
    app.close()
    check = wait_check(server, "service:web-tcp", status_is("critical"))
    assert check["Output"] == f"dial tcp {target}: connect: connection refused"
    server.put("/v1/agent/service/deregister/web-tcp")


def _health_server(serving: list[int]) -> tuple[grpc.Server, int]:
    """A real gRPC server answering grpc.health.v1.Health/Check with ``serving[0]``."""

    def check(request: bytes, context: grpc.ServicerContext) -> bytes:
        return bytes([0x08, serving[0]])

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(check)},
    )
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    return srv, port


def test_grpc_and_h2ping_checks_probe_a_real_grpc_server(server: ServerProcess) -> None:
    serving = [1]
    srv, port = _health_server(serving)
    try:
        register(server, {"Name": "rpc", "Checks": [
            {"CheckID": "rpc-health", "GRPC": f"127.0.0.1:{port}/rpc", "Interval": "1s"},
            {"CheckID": "rpc-ping", "H2PING": f"127.0.0.1:{port}", "H2PingUseTLS": False,
             "Interval": "1s"}]})  # fmt: skip
        check = wait_check(server, "rpc-health", status_is("passing"))
        assert check["Output"] == f"gRPC check 127.0.0.1:{port}/rpc: success"
        check = wait_check(server, "rpc-ping", status_is("passing"))
        assert check["Output"] == "HTTP2 ping was successful"
        serving[0] = 2
        check = wait_check(server, "rpc-health", status_is("critical"))
        assert check["Output"].endswith("gRPC service unhealthy: NOT_SERVING")
    finally:
        srv.stop(None)
    check = wait_check(server, "rpc-ping", status_is("critical"))
    assert check["Output"].startswith(f"Failed to ping 127.0.0.1:{port}")
    server.put("/v1/agent/service/deregister/rpc")


def test_a_script_check_runs_under_the_servers_opt_in(server: ServerProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = tmp_path / "code"
    code.write_text("0")
    script = f"import sys; print('exit', open({str(code)!r}).read()); sys.exit(int(open({str(code)!r}).read()))"
    register(server, {"Name": "job", "Check": {"Args": [sys.executable, "-c", script],
                                               "Interval": "1s"}})  # fmt: skip
    assert wait_check(server, "service:job", status_is("passing"))["Output"] == "exit 0\n"
    code.write_text("1")
    assert wait_check(server, "service:job", status_is("warning"))["Output"] == "exit 1\n"
    code.write_text("2")
    assert wait_check(server, "service:job", status_is("critical"))["Output"] == "exit 2\n"
    server.put("/v1/agent/service/deregister/job")


def test_a_server_without_the_opt_in_refuses_script_checks() -> None:
    s = start_server()
    try:
        status, text, _ = s.request("PUT", "/v1/agent/check/register",
                                    {"Name": "x", "Args": ["true"], "Interval": "1s"})  # fmt: skip
        assert status == 400 and "Args: Scripts are disabled" in text
        assert s.get("/v1/agent/checks") == {}
    finally:
        s.stop()


def test_check_register_and_deregister_on_the_agent(
    server: ServerProcess, app: HealthApp
) -> None:
    register(server, {"Name": "api", "Port": app.port})
    body = {"Name": "api tcp", "ServiceID": "api", "TCP": f"127.0.0.1:{app.port}",
            "Interval": "1s", "Notes": "the port", "SuccessBeforePassing": 2}  # fmt: skip
    assert server.request("PUT", "/v1/agent/check/register", body)[0] == 200
    check = wait_check(server, "api tcp", status_is("passing"))
    assert (check["ServiceID"], check["ServiceName"], check["Notes"]) == ("api", "api", "the port")
    assert check["Definition"]["SuccessBeforePassing"] == 2
    node_check = {"Name": "disk", "TTL": "30s", "Status": "warning"}
    assert server.request("PUT", "/v1/agent/check/register", node_check)[0] == 200
    assert server.get("/v1/agent/checks")["disk"]["Status"] == "warning"
    assert server.request("PUT", "/v1/agent/check/deregister/disk", b"")[0] == 200
    assert server.request("PUT", "/v1/agent/check/deregister/api%20tcp", b"")[0] == 200
    assert {"disk", "api tcp"}.isdisjoint(server.get("/v1/agent/checks"))
    status, text, _ = server.request("PUT", "/v1/agent/check/deregister/disk", b"")
    assert status == 404 and "Unknown check ID" in text
    server.put("/v1/agent/service/deregister/api")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"TTL": "10s"}, "Name: Missing check name"),
        ({"Name": "x", "ServiceID": "nope", "TTL": "1s"}, "ServiceID 'nope' does not exist"),
        ({"Name": "x", "HTTP": "http://x"}, "Interval: Interval must be > 0"),
        ({"Name": "x", "TCP": "a:1", "GRPC": "a:1", "Interval": "1s"}, "a check has one type"),
        ({"Name": "x"}, "TTL: TTL must be > 0 for TTL checks"),
        ({"Name": "x", "AliasService": "a", "Interval": "1s"}, "Interval cannot be set for Alias"),
    ],
)
def test_bad_check_registrations_are_400s_naming_the_field(
    server: ServerProcess, body: dict[str, Any], message: str
) -> None:
    before = server.get("/v1/agent/checks")
    status, text, _ = server.request("PUT", "/v1/agent/check/register", body)
    assert status == 400 and message in text, text
    assert server.get("/v1/agent/checks") == before


def test_agent_health_by_service_answers_consuls_codes(server: ServerProcess) -> None:
    for sid, status in (("h-1", "passing"), ("h-2", "warning")):
        register(server, {"Name": "h", "ID": sid, "Check": {"TTL": "60s", "Status": status}})
    status, body, _ = server.request("GET", "/v1/agent/health/service/id/h-1")
    assert status == 200 and body["AggregatedStatus"] == "passing"
    assert body["Service"]["ID"] == "h-1" and body["Checks"][0]["CheckID"] == "service:h-1"
    assert server.request("GET", "/v1/agent/health/service/id/h-2?format=text")[:2] == (
        429, "warning")  # fmt: skip
    status, body, _ = server.request("GET", "/v1/agent/health/service/name/h")
    assert status == 429 and [b["AggregatedStatus"] for b in body] == ["passing", "warning"]
    server.put("/v1/agent/check/fail/service:h-2")
    assert server.request("GET", "/v1/agent/health/service/name/h?format=text")[:2] == (
        503, "critical")  # fmt: skip
    assert server.request("GET", "/v1/agent/health/service/id/nope?format=text")[:2] == (
        404, "ServiceId nope not found")  # fmt: skip
    assert server.request("GET", "/v1/agent/health/service/name/nope")[0] == 404
    for sid in ("h-1", "h-2"):
        server.put(f"/v1/agent/service/deregister/{sid}")


def test_maintenance_takes_a_service_and_then_the_node_out_of_healthy_answers(
    server: ServerProcess,
) -> None:
    register(server, {"Name": "m", "Check": {"TTL": "60s", "Status": "passing"}})
    path = "/v1/agent/service/maintenance/m"
    assert server.request("PUT", path, b"")[:2] == (400, "Invalid request: enable: Missing value for enable\n")  # fmt: skip
    assert server.request("PUT", f"{path}?enable=true&reason=upgrading", b"")[0] == 200
    maint = server.get("/v1/agent/checks")["_service_maintenance:m"]
    assert (maint["Status"], maint["Notes"], maint["Name"]) == (
        "critical", "upgrading", "Service Maintenance Mode")  # fmt: skip
    assert server.get("/v1/health/service/m?passing=1") == []
    assert server.request("GET", "/v1/agent/health/service/id/m?format=text")[:2] == (
        503, "maintenance")  # fmt: skip
    register(server, {"Name": "m", "Check": {"TTL": "60s", "Status": "passing"}})
    assert "_service_maintenance:m" in server.get("/v1/agent/checks")  # survives re-registering
    assert server.request("PUT", f"{path}?enable=false", b"")[0] == 200
    assert len(server.get("/v1/health/service/m?passing=1")) == 1
    assert server.request("PUT", "/v1/agent/maintenance?enable=true", b"")[0] == 200
    node = server.get("/v1/agent/checks")["_node_maintenance"]
    assert node["Notes"].startswith("Maintenance mode is enabled for this node")
    assert server.get("/v1/health/service/m?passing=1") == []
    assert server.request("PUT", "/v1/agent/maintenance?enable=false", b"")[0] == 200
    assert len(server.get("/v1/health/service/m?passing=1")) == 1
    assert server.request("PUT", "/v1/agent/service/maintenance/nope?enable=true", b"")[0] == 404
    server.put("/v1/agent/service/deregister/m")


def test_an_alias_check_follows_the_instance_it_aliases(server: ServerProcess) -> None:
    target = {"Name": "target", "Check": {"TTL": "60s", "Status": "passing"}}
    register(server, target)
    register(server, {"Name": "front", "Check": {"AliasService": "target"}})
    check = wait_check(server, "service:front", status_is("passing"))
    assert check["Output"] == "All checks passing."
    server.put("/v1/agent/service/deregister/target")
    check = wait_check(server, "service:front", status_is("critical"))
    assert check["Output"] == "Service target could not be found on node loom-server"
    register(server, target)
    wait_check(server, "service:front", status_is("passing"))
    server.put("/v1/agent/check/fail/service:target?note=down")
    check = wait_check(server, "service:front", status_is("critical"))
    assert check["Output"] == "Aliased check \"Service 'target' check\" failing: down"
    for sid in ("target", "front"):
        server.put(f"/v1/agent/service/deregister/{sid}")


def test_py_consul_registers_checks_and_sets_maintenance(
    server: ServerProcess, app: HealthApp
) -> None:
    host, port = server.http.rsplit(":", 1)
    c = consul.Consul(host=host, port=int(port))
    assert c.agent.service.register("pyc", port=app.port)
    assert c.agent.check.register(
        "pyc tcp", consul.Check.tcp("127.0.0.1", app.port, "1s"), service_id="pyc"
    )
    check = wait_check(server, "pyc tcp", status_is("passing"))
    assert check["Output"] == f"TCP connect 127.0.0.1:{app.port}: Success"
    url = f"http://127.0.0.1:{app.port}/"
    assert c.agent.check.register("pyc http", consul.Check.http(url, "1s", timeout="2s"))
    assert wait_check(server, "pyc http", status_is("passing"))["Timeout"] == "2s"
    assert c.agent.maintenance(True, "patching")
    assert c.agent.checks()["_node_maintenance"]["Notes"] == "patching"
    assert c.agent.maintenance(False)
    assert c.agent.service.maintenance("pyc", True, "draining")
    assert c.agent.checks()["_service_maintenance:pyc"]["Notes"] == "draining"
    assert c.agent.service.maintenance("pyc", False)
    assert c.agent.check.deregister("pyc tcp") and c.agent.check.deregister("pyc http")
    assert {"pyc tcp", "pyc http", "_node_maintenance"}.isdisjoint(c.agent.checks())
    assert c.agent.service.deregister("pyc")
