"""Checks that run, with real Envoy: an HTTP and a TCP check of a real app, run by the app's
sidecar dataplane, take the app's sidecar endpoint out of the client's Envoy and put it back.

``api`` has one instance behind a sidecar; ``web``'s sidecar has ``api`` as an upstream. The
test waits on what Envoy shows (its admin ``/clusters``) and on the server's health answers,
each a bounded poll of the real thing.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.appmesh import AppMesh
from tests.support.leaks import hand_over
from tests.support.mesh import Proc, curl, envoy_admin, free_port, start_dataplane, wait_for
from tests.support.server import start_server

pytestmark = pytest.mark.envoy


class Port:
    """A TCP port the test opens and closes (what the TCP check probes); while open it
    accepts and closes every connection, so probes never fill its backlog."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.sock = sock
        self.thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self.thread.start()

    @staticmethod
    def _accept(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None


class Mesh(AppMesh):
    """``api-1`` with an HTTP and a TCP check; ``web``'s sidecar has ``api`` upstream on
    ``upstream``."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, start_server())
        self.tcp = Port()
        self.tcp.open()
        self.upstream = free_port()

    def close(self) -> None:
        super().close()
        self.tcp.close()

    def endpoint_in_envoy(self) -> bool:
        web = self.procs[1].work
        assert web is not None
        return f"::127.0.0.1:{self.sidecar_port}::" in envoy_admin(web, "/clusters")

    def connect_health(self) -> list[str]:
        return [e["Service"]["ID"] for e in self.server.get("/v1/health/connect/api?passing=1")]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("checks"))
    try:
        m.register_api({"CheckID": "api-tcp", "TCP": f"127.0.0.1:{m.tcp.port}", "Interval": "1s"})
        m.server.put("/v1/agent/service/register", {
            "Name": "web", "Port": free_port(), "Connect": {"SidecarService": {"Proxy": {
                "Upstreams": [{"DestinationName": "api", "LocalBindPort": m.upstream}]}}}})  # fmt: skip
        m.dataplane("api-1-sidecar-proxy")
        m.dataplane("web-sidecar-proxy")
        url = f"http://127.0.0.1:{m.upstream}/"
        wait_for(lambda: curl(url)[1] == "api\n", 40, "api through the mesh")
        yield m
    finally:
        m.close()


def test_the_sidecars_default_checks_pass_once_envoy_listens(mesh: Mesh) -> None:
    checks = mesh.server.get("/v1/agent/checks")
    listening = checks["service:api-1-sidecar-proxy:1"]
    assert listening["Name"] == "Connect Sidecar Listening"
    assert listening["Output"] == f"TCP connect 127.0.0.1:{mesh.sidecar_port}: Success"
    aliasing = checks["service:api-1-sidecar-proxy:2"]
    assert (aliasing["Name"], aliasing["Status"]) == ("Connect Sidecar Aliasing api-1", "passing")
    assert mesh.connect_health() == ["api-1-sidecar-proxy"]
    assert mesh.endpoint_in_envoy()


def test_a_failing_http_check_takes_the_endpoint_out_of_envoy_and_back(mesh: Mesh) -> None:
    mesh.app.health = 503
    wait_for(lambda: not mesh.endpoint_in_envoy(), 20, "api's endpoint gone from web's Envoy")
    check = mesh.server.get("/v1/agent/checks")["api-http"]
    assert check["Status"] == "critical"
    assert check["Output"].startswith("HTTP GET http://127.0.0.1:") and " 503 " in check["Output"]
    assert mesh.connect_health() == []
    mesh.app.health = 200
    wait_for(mesh.endpoint_in_envoy, 20, "api's endpoint back in web's Envoy")
    assert mesh.connect_health() == ["api-1-sidecar-proxy"]


def test_a_failing_tcp_check_takes_the_endpoint_out_of_envoy_and_back(mesh: Mesh) -> None:
    mesh.tcp.close()
    wait_for(lambda: not mesh.endpoint_in_envoy(), 20, "api's endpoint gone from web's Envoy")
    check = mesh.server.get("/v1/agent/checks")["api-tcp"]
    assert check["Output"] == f"dial tcp 127.0.0.1:{mesh.tcp.port}: connect: connection refused"
    mesh.tcp.open()
    wait_for(mesh.endpoint_in_envoy, 20, "api's endpoint back in web's Envoy")
    # Envoy's admin /clusters shows its main thread's hosts; each of its 2 workers gets the
    # update posted after, so a call on a worker still without it is "no healthy upstream":
    # the TCP proxy closes the connection at once (curl's exit 52, seen under load). The event
    # that matters is the call through a worker that has it: wait on that, bounded.
    url = f"http://127.0.0.1:{mesh.upstream}/"
    wait_for(lambda: curl(url) == (0, "api\n"), 10, "a call through web's workers")


def test_a_rejected_listener_makes_the_listening_check_critical_with_envoys_reason(
    mesh: Mesh,
) -> None:
    with socket.socket() as taken:  # the sidecar's port, held without SO_REUSEPORT
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        side = taken.getsockname()[1]
        mesh.server.put("/v1/agent/service/register", {
            "Name": "blocked", "Port": free_port(),
            "Connect": {"SidecarService": {"Port": side}}})  # fmt: skip
        proc = start_dataplane(mesh.tmp, "blocked-sidecar-proxy", mesh.server.http,
                               mesh.server.grpc, "--ready-timeout", "30")  # fmt: skip
        try:
            listening = wait_for(
                lambda: (c := mesh.server.get("/v1/agent/checks")["service:blocked-sidecar-proxy:1"])
                and "rejected listener" in c["Output"] and c,
                25,
                "the listening check to carry Envoy's rejection",
            )
        finally:
            proc.stop()
    assert listening["Status"] == "critical"
    assert listening["Output"].startswith("Envoy rejected listener ")
    assert "ddress already in use" in listening["Output"]  # Envoy's own words
    assert mesh.server.get("/v1/health/connect/blocked?passing=1") == []
    mesh.server.put("/v1/agent/service/deregister/blocked")


def test_a_dataplane_runs_its_services_script_check_only_with_its_own_opt_in(
    tmp_path: Path,
) -> None:
    server = start_server("--enable-script-checks")
    procs: list[Proc] = []
    try:
        server.put("/v1/agent/service/register", {
            "Name": "job", "Port": free_port(),
            "Check": {"CheckID": "job-script", "Interval": "1s",
                      "Args": [sys.executable, "-c", "print('ran next to the workload')"]},
            "Connect": {"SidecarService": {}}})  # fmt: skip

        def agent(*extra: str) -> Proc:
            proc = start_dataplane(tmp_path, "job-sidecar-proxy", server.http, server.grpc,
                                   "--no-envoy", *extra)  # fmt: skip
            procs.append(proc)
            hand_over(proc.p.pid)
            return proc

        without = agent()
        wait_for(lambda: "not running script check job-script" in without.output(), 30,
                 "the dataplane to leave the script check alone")  # fmt: skip
        assert server.get("/v1/agent/checks")["job-script"]["Output"] == ""
        without.stop()
        agent("--enable-script-checks")
        wait_for(lambda: server.get("/v1/agent/checks")["job-script"]["Status"] == "passing",
                 30, "the script check run by the dataplane")  # fmt: skip
        assert server.get("/v1/agent/checks")["job-script"]["Output"] == (
            "ran next to the workload\n")  # fmt: skip
    finally:
        for p in procs:
            p.stop()
        server.stop()
