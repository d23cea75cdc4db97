"""L7 intentions with real Envoy: HTTP services get per-request decisions (403 when denied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mesh import curl, free_port, start_dataplane, start_echo, wait_for
from tests.support.server import start_server

pytestmark = pytest.mark.envoy


def test_permissions_allow_and_deny_requests_by_path_and_method(tmp_path: Path) -> None:
    server = start_server("--default-intention-policy", "deny")
    procs = []
    try:
        app, up = free_port(), free_port()
        procs.append(start_echo(tmp_path, "hello world", app))
        server.put("/v1/config", {"Kind": "service-defaults", "Name": "static-server", "Protocol": "http"})
        server.put("/v1/agent/service/register", {"Name": "static-server", "Port": app,
                   "Connect": {"SidecarService": {"Port": free_port()}}})  # fmt: skip
        server.put("/v1/agent/service/register", {"Name": "static-client", "Port": free_port(),
                   "Connect": {"SidecarService": {"Port": free_port(), "Proxy": {"Upstreams": [
                       {"DestinationName": "static-server", "LocalBindPort": up}]}}}})  # fmt: skip
        server.put("/v1/config", {
            "Kind": "service-intentions", "Name": "static-server",
            "Sources": [{"Name": "static-client", "Permissions": [
                {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
                {"Action": "allow", "HTTP": {"PathPrefix": "/", "Methods": ["GET"]}},
            ]}],
        })  # fmt: skip
        for pid in ("static-server-sidecar-proxy", "static-client-sidecar-proxy"):
            procs.append(start_dataplane(tmp_path, pid, server.http, server.grpc))
        base = f"http://127.0.0.1:{up}"

        def status(path: str, *extra: str) -> str:
            return curl(base + path, "-o", "/dev/null", "-w", "%{http_code}", *extra)[1]

        wait_for(lambda: status("/public") == "200", 30, "GET /public allowed")
        assert curl(base + "/public") == (0, "hello world\n")
        assert status("/admin/users") == "403"  # a deny permission listed first
        assert status("/public", "-X", "POST") == "403"  # no permission matches: default deny
        # Without the intention, the default (deny) applies to every request.
        server.request("DELETE", "/v1/config/service-intentions/static-server")
        wait_for(lambda: status("/public") == "403", 10, "GET denied by default")
    finally:
        for p in reversed(procs):
            p.stop()
        server.stop()
