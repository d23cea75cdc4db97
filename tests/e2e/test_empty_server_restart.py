"""A server restarted with an empty store (``--dev``) must not wipe the sidecars: the proxies it
does not know keep their last configuration, their dataplanes say why, and once the services
are registered again the server's configuration (a new intention) applies. Real Envoy on
loopback, one sidecar on Delta xDS and one on State-of-the-World."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mesh import Proc, curl, free_port, start_dataplane, start_echo, wait_for
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.envoy

SERVER_PROXY = "static-server-sidecar-proxy"
CLIENT_PROXY = "static-client-sidecar-proxy"
REQUESTS = 50


def _register(
    s: ServerProcess, app: int, server_sidecar: int, client_sidecar: int, up: int
) -> None:
    s.put("/v1/agent/service/register", {
        "Name": "static-server", "Port": app,
        "Connect": {"SidecarService": {"Port": server_sidecar}}})  # fmt: skip
    s.put("/v1/agent/service/register", {
        "Name": "static-client", "Port": free_port(),
        "Connect": {"SidecarService": {"Port": client_sidecar, "Proxy": {"Upstreams": [
            {"DestinationName": "static-server", "LocalBindPort": up}]}}}})  # fmt: skip


def test_a_dev_restart_keeps_every_sidecar_serving_until_services_register_again(
    tmp_path: Path,
) -> None:
    app, server_sidecar, client_sidecar, up = (free_port() for _ in range(4))
    url = f"http://127.0.0.1:{up}/"
    server = start_server()
    procs: list[Proc] = []
    try:
        procs.append(start_echo(tmp_path, "hello world", app))
        _register(server, app, server_sidecar, client_sidecar, up)
        procs.append(start_dataplane(tmp_path, SERVER_PROXY, server.http, server.grpc))
        procs.append(
            start_dataplane(tmp_path, CLIENT_PROXY, server.http, server.grpc, "--xds", "sotw")
        )
        dataplanes = procs[1:]
        wait_for(lambda: curl(url)[1] == "hello world\n", 30, "hello world through the mesh")

        http, grpc = server.http, server.grpc
        server.kill()
        server = ServerProcess(["--dev", "--http-addr", http, "--grpc-addr", grpc]).start()
        # Both sidecars reconnect to a server that knows neither: it holds their requests...
        for proxy in (SERVER_PROXY, CLIENT_PROXY):
            wait_for(
                lambda p=proxy: f"proxy {p} is not registered; keeping its last configuration"
                in server.log_text(),
                30, f"the restarted server to hold {proxy}",
            )  # fmt: skip
        # ...and each dataplane says why nothing comes.
        for dp in dataplanes:
            wait_for(
                lambda d=dp: "is not registered on the server; Envoy keeps its last configuration"
                in d.output(),
                30, "the dataplane to say its proxy is not registered",
            )  # fmt: skip
        failures = [r for r in (curl(url) for _ in range(REQUESTS)) if r != (0, "hello world\n")]
        assert failures == []

        _register(server, app, server_sidecar, client_sidecar, up)
        server.put(
            "/v1/connect/intentions/exact?source=static-client&destination=static-server",
            {"Action": "deny"},
        )
        wait_for(lambda: curl(url)[0] == 52, 30, "the new intention to apply after registration")
        server.request(
            "DELETE", "/v1/connect/intentions/exact?source=static-client&destination=static-server"
        )
        wait_for(lambda: curl(url) == (0, "hello world\n"), 30, "allowed again")
    finally:
        for p in reversed(procs):
            p.stop()
        server.stop()
