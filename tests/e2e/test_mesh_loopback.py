"""Seeds 000/002 on loopback with real Envoy (no root): explicit upstreams over mTLS,
intentions enforced by Envoy, load sharing, deregistration, server restart."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from tests.support.leaks import hand_over
from tests.support.mesh import (
    Proc,
    curl,
    envoy_admin,
    free_port,
    start_dataplane,
    start_echo,
    wait_for,
)
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.envoy


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server: ServerProcess = start_server("--leaf-ttl", "8", data_dir=tmp / "data")
        self.procs: list[Proc] = []
        self.upstream_port = free_port()
        self.server_sidecar = free_port()
        self.client_sidecar = free_port()
        self.app_port = free_port()

    def register(self) -> None:
        s = self.server
        s.put("/v1/agent/service/register", {
            "Name": "static-server", "Port": self.app_port,
            "Connect": {"SidecarService": {"Port": self.server_sidecar}}})  # fmt: skip
        s.put("/v1/agent/service/register", {
            "Name": "static-client", "Port": free_port(),
            "Connect": {"SidecarService": {"Port": self.client_sidecar, "Proxy": {"Upstreams": [
                {"DestinationName": "static-server", "LocalBindPort": self.upstream_port}]}}}})  # fmt: skip

    def own(self, proc: Proc) -> Proc:
        """Keep ``proc`` until the module is done (started by a test or by the fixture)."""
        self.procs.append(proc)
        hand_over(proc.p.pid)
        return proc

    def dataplane(self, proxy_id: str, *extra: str) -> Proc:
        return self.own(
            start_dataplane(self.tmp, proxy_id, self.server.http, self.server.grpc, *extra)
        )

    def sidecar(self, proxy_id: str) -> Proc:
        return next(p for p in self.procs if p.work and p.work.name.startswith(f"dp-{proxy_id}-"))

    def url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}/"

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.server.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    m = Mesh(tmp_path_factory.mktemp("mesh"))
    try:
        m.own(start_echo(m.tmp, "hello world", m.app_port, "a"))
        # Any start order converges: the dataplanes start before the services exist.
        early = [m.dataplane("static-server-sidecar-proxy"),
                 m.dataplane("static-client-sidecar-proxy", "--xds", "sotw")]  # fmt: skip
        for p in early:  # each has asked for its registration and been told to wait
            wait_for(lambda p=p: "is not registered yet" in p.output(), 30, "a dataplane waiting")
        m.register()
        wait_for(lambda: curl(m.url())[1] == "hello world\n", 30, "hello world through the mesh")
        yield m
    finally:
        m.close()


def test_the_client_reaches_the_server_through_both_sidecars(mesh: Mesh) -> None:
    assert curl(mesh.url()) == (0, "hello world\n")


def test_a_deny_intention_rejects_new_connections_and_deleting_it_restores_them(mesh: Mesh) -> None:
    s = mesh.server
    s.put(
        "/v1/connect/intentions/exact?source=static-client&destination=static-server",
        {"Action": "deny"},
    )
    wait_for(lambda: curl(mesh.url())[0] == 52, 5, "curl exit 52 under a deny intention")
    status, _, _ = s.request(
        "DELETE", "/v1/connect/intentions/exact?source=static-client&destination=static-server"
    )
    assert status == 200
    wait_for(lambda: curl(mesh.url()) == (0, "hello world\n"), 5, "hello world again")


def test_default_deny_needs_an_allow_intention(mesh: Mesh) -> None:
    s = mesh.server
    s.put("/v1/connect/intentions/exact?source=*&destination=static-server", {"Action": "deny"})
    s.put(
        "/v1/connect/intentions/exact?source=static-client&destination=static-server",
        {"Action": "allow"},
    )
    # Both intentions are in the server sidecar's active listener once the later one is.
    work = mesh.sidecar("static-server-sidecar-proxy").work
    assert work is not None
    wait_for(lambda: "svc/static-client$" in _active_listeners(work), 10, "the allow in Envoy")
    assert curl(mesh.url()) == (0, "hello world\n")  # exact allow beats wildcard deny
    s.request(
        "DELETE", "/v1/connect/intentions/exact?source=static-client&destination=static-server"
    )
    wait_for(lambda: curl(mesh.url())[0] == 52, 5, "denied by the wildcard")
    s.request("DELETE", "/v1/connect/intentions/exact?source=*&destination=static-server")
    wait_for(lambda: curl(mesh.url())[0] == 0, 5, "allowed again")


def test_the_public_listener_refuses_plain_text_and_certless_tls(mesh: Mesh) -> None:
    rc, out = curl(f"http://127.0.0.1:{mesh.server_sidecar}/")
    assert rc != 0 and "hello" not in out
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", mesh.server_sidecar), 3) as raw,
        pytest.raises((ssl.SSLError, ConnectionError, OSError)),
        ctx.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        if not tls.recv(100):
            raise ConnectionError("closed without a response")


def test_a_second_instance_shares_the_load_and_deregistering_one_fails_no_request(
    mesh: Mesh,
) -> None:
    port2, side2 = free_port(), free_port()
    mesh.own(start_echo(mesh.tmp, "hello world", port2, "b"))
    mesh.server.put("/v1/agent/service/register", {
        "Name": "static-server", "ID": "static-server-2", "Port": port2,
        "Connect": {"SidecarService": {"Port": side2}}})  # fmt: skip
    dp2 = mesh.dataplane("static-server-2-sidecar-proxy")

    def instances() -> set[str]:
        seen = set()
        for _ in range(30):
            rc, out = curl(mesh.url(), "-i")
            assert rc == 0
            seen.update(
                line.split(":", 1)[1].strip()
                for line in out.splitlines()
                if line.startswith("X-Instance")
            )
        return seen

    wait_for(lambda: instances() == {"a", "b"}, 30, "both instances serving")
    failures: list[int] = []
    answered: list[int] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            rc, out = curl(mesh.url())
            answered.append(rc)
            if rc != 0 or out != "hello world\n":
                failures.append(rc)

    t = threading.Thread(target=hammer)
    t.start()
    wait_for(lambda: len(answered) >= 5, 20, "requests before the deregistration")
    mesh.server.put("/v1/agent/service/deregister/static-server-2")
    client = mesh.sidecar("static-client-sidecar-proxy").work
    assert client is not None
    # The instance goes away once the client no longer picks it and the requests that may have
    # (the one under way when it was dropped) are done: the hammer sends one at a time.
    wait_for(
        lambda: f"::127.0.0.1:{side2}::" not in envoy_admin(client, "/clusters"),
        20,
        "endpoint removed",
    )
    dropped = len(answered)
    wait_for(lambda: len(answered) >= dropped + 2, 20, "a request sent after the drop")
    dp2.stop()
    after = len(answered)
    wait_for(lambda: len(answered) >= after + 5, 20, "requests after the instance went away")
    done.set()
    t.join(20)
    assert failures == []
    assert instances() == {"a"}


def test_restarting_the_server_does_not_interrupt_traffic_and_dataplanes_resync(mesh: Mesh) -> None:
    mesh.server.kill()
    assert curl(mesh.url()) == (0, "hello world\n")  # Envoy keeps its last config
    restarted = ServerProcess(
        ["--data-dir", str(mesh.tmp / "data"), "--leaf-ttl", "8",
         "--http-addr", mesh.server.http, "--grpc-addr", mesh.server.grpc]
    ).start()  # fmt: skip
    assert restarted.proc is not None
    hand_over(restarted.proc.pid)  # the module's server from now on
    mesh.server = restarted
    assert curl(mesh.url()) == (0, "hello world\n")
    restarted.put(
        "/v1/connect/intentions/exact?source=static-client&destination=static-server",
        {"Action": "deny"},
    )
    wait_for(
        lambda: curl(mesh.url())[0] == 52, 20, "the reconnected dataplanes to apply a new intention"
    )
    restarted.request(
        "DELETE", "/v1/connect/intentions/exact?source=static-client&destination=static-server"
    )
    wait_for(lambda: curl(mesh.url())[0] == 0, 10, "allowed again")


def _active_listeners(work: Path) -> str:
    """The active state of an Envoy's dynamic listeners, as JSON text."""
    dump = json.loads(envoy_admin(work, "/config_dump?resource=dynamic_listeners"))
    return json.dumps([c.get("active_state") for c in dump.get("configs", [])])


def _leaf_serial(mesh: Mesh) -> str:
    client = mesh.sidecar("static-client-sidecar-proxy")
    assert client.work is not None
    certs = json.loads(envoy_admin(client.work, "/certs"))["certificates"]
    return str(certs[0]["cert_chain"][0]["serial_number"])


def test_leaf_certificates_rotate_without_dropping_an_open_connection(mesh: Mesh) -> None:
    # The server signs 8 s leaves: each agent renews at half the life left (~4 s), makes a new
    # key and pushes the new leaf to its Envoy on the open SDS stream.
    before = _leaf_serial(mesh)
    with socket.create_connection(("127.0.0.1", mesh.upstream_port), 5) as conn:
        conn.settimeout(5)

        def answered() -> bool:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"hello world\n"):
                chunk = conn.recv(4096)
                assert chunk, "connection dropped during certificate rotation"
                data += chunk
            return True

        # Requests on the open connection until the new leaf is in Envoy, then one more.
        deadline = time.monotonic() + 30
        while answered() and _leaf_serial(mesh) == before:
            assert time.monotonic() < deadline, "no new leaf certificate within 30 s"
            time.sleep(0.1)  # a polling interval: the loop ends on the rotation, not on time
        assert answered()  # the connection opened under the old leaf still works
    assert curl(mesh.url()) == (0, "hello world\n")
