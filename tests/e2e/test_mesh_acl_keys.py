"""Real Envoy sidecars on loopback under `--acl-default-policy deny`, each agent holding its
own key: tokens on the ADS stream and the CSR, intentions, rotation, and an attacker's agent.

Each dataplane gets a token with a service identity for its own service only. The agent makes
its key, has its CSR signed and serves the leaf to its Envoy over SDS; the server never sends
a key. With short leaves (``--leaf-ttl 8``) the leaf rotates under an open connection. A
dataplane started for the other service's proxy with the client's token gets no certificate
and exits with the server's refusal.
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
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
from tests.support.server import ServerProcess, acl_flags, start_server

pytestmark = pytest.mark.envoy
ROOT = str(uuid.uuid4())
MGMT = {"X-Consul-Token": ROOT}
INTENTION = "/v1/connect/intentions/exact?source=static-client&destination=static-server"


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server: ServerProcess = start_server(*acl_flags(ROOT), "--leaf-ttl", "8")
        self.procs: list[Proc] = []
        self.upstream_port = free_port()
        self.server_sidecar = free_port()
        self.app_port = free_port()
        self.tokens = {name: self.token(name) for name in ("static-server", "static-client")}

    def as_root(self, method: str, path: str, body: object = None) -> object:
        status, out, _ = self.server.request(method, path, body, MGMT)
        assert status == 200, (path, status, out)
        return out

    def token(self, service: str) -> str:
        body = {"ServiceIdentities": [{"ServiceName": service}]}
        made = self.as_root("PUT", "/v1/acl/token", body)
        assert isinstance(made, dict)
        return str(made["SecretID"])

    def register(self) -> None:
        self.as_root("PUT", "/v1/agent/service/register", {
            "Name": "static-server", "Port": self.app_port,
            "Connect": {"SidecarService": {"Port": self.server_sidecar}}})  # fmt: skip
        self.as_root("PUT", "/v1/agent/service/register", {
            "Name": "static-client", "Port": free_port(),
            "Connect": {"SidecarService": {"Port": free_port(), "Proxy": {"Upstreams": [
                {"DestinationName": "static-server", "LocalBindPort": self.upstream_port}]}}}})  # fmt: skip

    def own(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        hand_over(proc.p.pid)
        return proc

    def dataplane(self, service: str) -> Proc:
        proxy = f"{service}-sidecar-proxy"
        return self.own(start_dataplane(self.tmp, proxy, self.server.http, self.server.grpc,
                                        "--token", self.tokens[service]))  # fmt: skip

    def sidecar(self, service: str) -> Proc:
        return next(p for p in self.procs if p.work and p.work.name.startswith(f"dp-{service}-"))

    def url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}/"

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.server.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("acl"))
    try:
        m.own(start_echo(m.tmp, "hello world", m.app_port, "a"))
        m.register()
        m.as_root("PUT", INTENTION, {"Action": "allow"})
        for service in ("static-server", "static-client"):
            m.dataplane(service)
        wait_for(lambda: curl(m.url())[1] == "hello world\n", 40, "hello world through the mesh")
        yield m
    finally:
        m.close()


def test_sidecars_with_their_own_tokens_pass_mtls_traffic_an_intention_allows(
    mesh: Mesh,
) -> None:
    assert curl(mesh.url()) == (0, "hello world\n")
    mesh.as_root("DELETE", INTENTION)
    try:
        wait_for(lambda: curl(mesh.url())[0] == 52, 20, "default deny without the intention")
    finally:
        mesh.as_root("PUT", INTENTION, {"Action": "allow"})
    wait_for(lambda: curl(mesh.url())[0] == 0, 20, "allowed again")


def test_the_token_bootstrap_and_sds_socket_are_owner_only_and_hold_no_key(mesh: Mesh) -> None:
    work = mesh.sidecar("static-client").work
    assert work is not None
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    boot = work / "bootstrap.json"
    assert stat.S_IMODE(boot.stat().st_mode) == 0o600
    text = boot.read_text()
    assert mesh.tokens["static-client"] in text and "PRIVATE KEY" not in text
    sds = json.loads(text)["static_resources"]["clusters"][1]
    path = Path(sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["pipe"]["path"])  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_leaf_envoy_holds_was_signed_for_the_agents_own_key(mesh: Mesh) -> None:
    work = mesh.sidecar("static-server").work
    assert work is not None
    certs = json.loads(envoy_admin(work, "/certs"))["certificates"]
    leaf = certs[0]["cert_chain"][0]
    uris = [s["uri"] for s in leaf["subject_alt_names"] if "uri" in s]
    assert len(uris) == 1 and uris[0].endswith("/ns/default/dc/dc1/svc/static-server")


def test_an_agent_for_the_server_proxy_with_the_client_token_gets_no_certificate(
    mesh: Mesh,
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "dataplane", "--proxy-id", "static-server-sidecar-proxy",
         "--http-addr", mesh.server.http, "--grpc-addr", mesh.server.grpc,
         "--token", mesh.tokens["static-client"], "--work-dir", str(mesh.tmp / "evil")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("loom: cannot get a certificate for static-server: ")
    assert "403" in last and "Permission denied" in last
    assert "lacks permission 'service:write' on \"static-server\"" in last
    assert not (mesh.tmp / "evil" / "bootstrap.json").exists()


def _leaf_serial(mesh: Mesh) -> str:
    work = mesh.sidecar("static-client").work
    assert work is not None
    certs = json.loads(envoy_admin(work, "/certs"))["certificates"]
    return str(certs[0]["cert_chain"][0]["serial_number"])


def test_the_agents_leaf_rotates_without_dropping_an_open_connection(mesh: Mesh) -> None:
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

        # Requests on the open connection until Envoy's admin shows a new leaf, then one more;
        # 8 s leaves renew at half their remaining life, so this ends well before the bound.
        deadline = time.monotonic() + 30
        while answered() and _leaf_serial(mesh) == before:
            assert time.monotonic() < deadline, "no new leaf certificate within 30 s"
            time.sleep(0.1)  # a polling interval: the loop ends on the rotation, not on time
        assert answered()
    assert curl(mesh.url()) == (0, "hello world\n")


def test_each_dataplane_reports_its_sidecars_checks_with_its_own_token(mesh: Mesh) -> None:
    # Each dataplane holds only its own service's token: this is what it wrote with it. The
    # server's sidecar passes before traffic flows; the client's may report a moment later.
    ids = [f"service:{s}-sidecar-proxy:{n}" for s in ("static-server", "static-client")
           for n in (1, 2)]  # fmt: skip

    def all_passing() -> dict[str, dict[str, str]] | None:
        got = mesh.as_root("GET", "/v1/agent/checks")
        assert isinstance(got, dict)
        return got if all(got.get(i, {}).get("Status") == "passing" for i in ids) else None

    checks = wait_for(all_passing, 20, "both sidecars' default checks passing")
    for service in ("static-server", "static-client"):
        listening = checks[f"service:{service}-sidecar-proxy:1"]
        assert listening["Status"] == "passing"
        assert listening["Output"].startswith("TCP connect 127.0.0.1:")
        assert checks[f"service:{service}-sidecar-proxy:2"]["Status"] == "passing"
        assert "cannot report check" not in mesh.sidecar(service).output()
