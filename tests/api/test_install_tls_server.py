"""A real `loom server` started with the very arguments and Secrets `loom install` renders
(TLS on the control plane, the default) answers only HTTPS and TLS gRPC, with a certificate
the rendered CA verifies under the names the installation's clients use; a client without
that CA refuses it, and the controller's rendered `--ca-file` reaches it from the Loom CLI."""

from __future__ import annotations

import base64
import datetime
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from loom.api import Client, ClientError, TlsSettings
from loom.k8s.certs import generate_server_tls
from tests.support.server import ServerProcess

SERVICE_NAME = "loom-server.loom.svc"
"""The server's name in the rendered https:// addresses of every client."""


def _loom(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "LOOM_"))}
    return subprocess.run([sys.executable, "-m", "loom", *args], capture_output=True, text=True,
                          timeout=60, env=clean)  # fmt: skip


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _secret_files(secret: dict[str, Any], into: Path) -> Path:
    into.mkdir()
    for key, value in secret["data"].items():
        (into / key).write_bytes(base64.b64decode(value))
    return into


class Installed:
    """`loom install`'s output, and a server run from its StatefulSet on loopback."""

    def __init__(self, tmp: Path, *install_args: str) -> None:
        out = _loom("install", *install_args)
        assert out.returncode == 0, out.stderr
        self.docs = list(yaml.safe_load_all(out.stdout))
        self.tls_dir = _secret_files(_named(self.docs, "Secret", "loom-server-cert"), tmp / "tls")
        ca_dir = _secret_files(_named(self.docs, "Secret", "loom-ca-cert"), tmp / "ca")
        self.ca_file = str(ca_dir / "tls.crt")
        token = _named(self.docs, "Secret", "loom-bootstrap-acl-token")["data"]["token"]
        self.token = base64.b64decode(token).decode()
        sts = _named(self.docs, "StatefulSet", "loom-server")
        self.container = sts["spec"]["template"]["spec"]["containers"][0]
        assert self.container["command"] == ["loom", "server"]
        self.args = [self._local(a, tmp) for a in self.container["args"]]

    def _local(self, arg: str, tmp: Path) -> str:
        """The pod's argument on this machine: loopback ports, the Secrets' files here."""
        return (
            arg.replace("0.0.0.0:8501", "127.0.0.1:0")
            .replace("0.0.0.0:8503", "127.0.0.1:0")
            .replace("/etc/loom/server-tls", str(self.tls_dir))
            .replace("/var/lib/loom", str(tmp / "data"))
            .replace("$(POD_NAME)", "loom-server-0")
            .replace("$(LOOM_BOOTSTRAP_TOKEN)", self.token)
        )


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[tuple[Installed, ServerProcess]]:
    inst = Installed(tmp_path)
    server = ServerProcess(inst.args).start()
    yield inst, server
    server.stop()


def test_the_rendered_server_listens_only_on_https_and_tls_grpc(installed) -> None:
    inst, server = installed
    assert "--no-http" in inst.args and "--no-grpc" in inst.args
    assert server.https and server.grpc_tls
    assert server.http == "" and server.grpc == ""
    assert not any(line.startswith("loom server: HTTP API on http://")
                   for line in server.ready_lines)  # fmt: skip


@pytest.mark.parametrize(
    "name", [SERVICE_NAME, "127.0.0.1", "loom-server-0.loom-server-headless.loom.svc"]
)
def test_the_rendered_ca_verifies_the_server_under_the_names_its_clients_use(
    installed, name: str
) -> None:
    inst, server = installed
    tls = TlsSettings(ca_file=inst.ca_file, server_name=name)
    client = Client(f"https://{server.https}", token=inst.token, tls=tls)
    assert client.get("/v1/status/leader") == "127.0.0.1:8300"
    assert client.get("/v1/acl/token/self")["Policies"][0]["Name"] == "global-management"
    context = ssl.create_default_context(cafile=inst.ca_file)
    context.set_alpn_protocols(["h2"])
    host, port = server.grpc_tls.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls_sock:  # fmt: skip
        assert tls_sock.selected_alpn_protocol() == "h2"


def test_a_client_without_the_rendered_ca_refuses_the_server(installed) -> None:
    _, server = installed
    client = Client(f"https://{server.https}", tls=TlsSettings(server_name=SERVICE_NAME))
    with pytest.raises(ClientError, match="certificate verify failed"):
        client.get("/v1/status/leader")


def test_the_controllers_rendered_https_address_and_ca_file_reach_the_server(installed) -> None:
    inst, server = installed
    ctr = _named(inst.docs, "Deployment", "loom-endpoints-controller")
    args = ctr["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--http-addr=https://{SERVICE_NAME}:8501" in args
    assert "--ca-file=/etc/loom/server-ca/tls.crt" in args
    out = _loom("catalog", "services", f"--http-addr=https://{server.https}",
                f"--ca-file={inst.ca_file}", f"--tls-server-name={SERVICE_NAME}",
                f"--token={inst.token}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["consul"]


def test_given_certificate_files_are_what_the_rendered_server_serves(tmp_path: Path) -> None:
    mine = generate_server_tls("loom", "loom", "dc1", datetime.datetime.now(datetime.UTC))
    given = tmp_path / "given"
    given.mkdir()
    for name, pem in (("cert.pem", mine.cert_pem), ("key.pem", mine.key_pem),
                      ("ca.pem", mine.ca_pem)):  # fmt: skip
        (given / name).write_bytes(pem)
    inst = Installed(tmp_path, f"--tls-cert-file={given / 'cert.pem'}",
                     f"--tls-key-file={given / 'key.pem'}", f"--tls-ca-file={given / 'ca.pem'}")  # fmt: skip
    assert Path(inst.ca_file).read_bytes() == mine.ca_pem
    server = ServerProcess(inst.args).start()
    try:
        host, port = server.https.rsplit(":", 1)
        served = ssl.get_server_certificate((host, int(port)))
        assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(mine.cert_pem.decode())
        tls = TlsSettings(ca_file=inst.ca_file, server_name=SERVICE_NAME)
        assert Client(f"https://{server.https}", tls=tls).get("/v1/status/leader")
    finally:
        server.stop()


def test_no_grpc_needs_a_tls_grpc_listener_and_excludes_a_plain_one() -> None:
    alone = _loom("server", "--dev", "--no-grpc")
    assert alone.returncode == 2 and "--no-grpc needs --grpc-tls-addr" in alone.stderr
    both = _loom("server", "--dev", "--no-grpc", "--grpc-addr", "127.0.0.1:0",
                 "--grpc-tls-addr", "127.0.0.1:0")  # fmt: skip
    assert both.returncode == 2 and "--no-grpc and --grpc-addr exclude each other" in both.stderr


def test_no_http_with_a_plain_wan_address_is_refused_at_start_with_the_reason() -> None:
    for wan in (["--join-wan", "127.0.0.1:1"], ["--advertise-addr-wan", "http://10.0.0.1:8500"]):
        out = _loom("server", "--dev", "--no-http", "--https-addr", "127.0.0.1:0", *wan)
        assert out.returncode == 2, (wan, out.stderr)
        assert "is plain HTTP, and this server neither serves nor sends plain HTTP" in out.stderr
        assert "give https://" in out.stderr


def test_an_https_only_server_advertises_its_https_address_on_the_wan() -> None:
    # A server with plain HTTP advertises that ...
    plain = ServerProcess(["--dev", "--http-addr", "127.0.0.1:0",
                           "--grpc-addr", "127.0.0.1:0"]).start()  # fmt: skip
    try:
        [state] = Client(plain.http).get("/v1/internal/federation-states")
        assert state["Servers"] == [plain.http.removeprefix("http://")]
    finally:
        plain.stop()
    # ... and an HTTPS-only one its HTTPS address, scheme and all.
    server = ServerProcess(["--dev", "--no-http", "--https-addr", "127.0.0.1:0",
                            "--grpc-addr", "127.0.0.1:0"]).start()  # fmt: skip
    try:
        tls = TlsSettings(ca_file=server.ca_file, server_name="127.0.0.1")
        [state] = Client(f"https://{server.https}", tls=tls).get("/v1/internal/federation-states")
        assert (state["Datacenter"], state["Servers"]) == ("dc1", [f"https://{server.https}"])
    finally:
        server.stop()
