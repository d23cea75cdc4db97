"""The HTTPS API of a real `loom server` with real TLS clients (py-consul, curl, Loom's own
client and CLI), and the attacks TLS must stop: plain HTTP on the TLS port, a server whose
certificate a client does not trust (wrong CA, self-signed, expired), a client without a
certificate when the server requires one."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from loom.api import Client, ClientError, TlsSettings
from tests.support.pki import ScratchCA
from tests.support.server import ServerProcess, start_server


def _tls_server(*extra: str, data_dir: Path | None = None) -> ServerProcess:
    return start_server("--https-addr", "127.0.0.1:0", "--grpc-tls-addr", "127.0.0.1:0",
                        *extra, data_dir=data_dir)  # fmt: skip


@pytest.fixture
def tls_server() -> Iterator[ServerProcess]:
    server = _tls_server("--tls-san", "loom.example.test")
    yield server
    server.stop()


def _loom(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "LOOM_"))}
    return subprocess.run([sys.executable, "-m", "loom", *args], capture_output=True, text=True,
                          timeout=30, env={**clean, **(env or {})})  # fmt: skip


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def test_the_ready_lines_name_the_https_and_tls_xds_listeners_and_the_ca_file(tls_server) -> None:
    assert tls_server.https and tls_server.grpc_tls
    assert Path(tls_server.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
    roots = tls_server.get("/v1/connect/ca/roots")  # plain HTTP stays on, as before
    assert Path(tls_server.ca_file).read_text() == roots["Roots"][0]["RootCert"]


def test_py_consul_speaks_https_verifying_the_built_in_ca(tls_server) -> None:
    host, port = tls_server.https.rsplit(":", 1)
    c = consul.Consul(host=host, port=int(port), scheme="https", verify=tls_server.ca_file)
    assert c.agent.service.register("web", port=8080)
    assert "web" in c.agent.services()
    assert c.connect.ca.roots()["Roots"][0]["Active"] is True


def test_curl_with_the_ca_file_reads_the_api_by_every_name_of_the_certificate(tls_server) -> None:
    port = tls_server.https.rsplit(":", 1)[1]
    for name in ("localhost", "loom-server", "server.dc1.consul", "loom.example.test"):
        out = _curl("--cacert", tls_server.ca_file, "--resolve", f"{name}:{port}:127.0.0.1",
                    f"https://{name}:{port}/v1/status/leader")  # fmt: skip
        assert out.returncode == 0, (name, out.stderr)
        assert out.stdout.strip() == '"127.0.0.1:8300"'
    out = _curl("--cacert", tls_server.ca_file, f"https://127.0.0.1:{port}/v1/catalog/services")
    assert out.returncode == 0 and out.stdout.strip() == '{"consul": []}'


def test_curl_refuses_a_name_the_certificate_does_not_carry(tls_server) -> None:
    port = tls_server.https.rsplit(":", 1)[1]
    out = _curl("--cacert", tls_server.ca_file, "--resolve", f"evil.test:{port}:127.0.0.1",
                f"https://evil.test:{port}/v1/status/leader")  # fmt: skip
    assert out.returncode == 60, out  # curl: peer certificate cannot be authenticated


def test_the_cli_reaches_https_with_ca_file_flag_or_consul_environment(tls_server) -> None:
    url = f"https://{tls_server.https}"
    flag = _loom("catalog", "services", "--http-addr", url, "--ca-file", tls_server.ca_file)
    assert flag.returncode == 0, flag.stderr
    env = _loom("catalog", "services", env={"CONSUL_HTTP_ADDR": url,
                                            "CONSUL_CACERT": tls_server.ca_file})  # fmt: skip
    assert env.returncode == 0, env.stderr
    ssl_flag = _loom("catalog", "services", env={"CONSUL_HTTP_ADDR": tls_server.https,
                                                 "CONSUL_HTTP_SSL": "true",
                                                 "LOOM_CACERT": tls_server.ca_file})  # fmt: skip
    assert ssl_flag.returncode == 0, ssl_flag.stderr


def test_the_cli_without_the_ca_refuses_the_server(tls_server) -> None:
    out = _loom("catalog", "services", "--http-addr", f"https://{tls_server.https}")
    assert out.returncode == 1
    assert "certificate verify failed" in out.stderr and "Traceback" not in out.stderr
    assert "--ca-file" in out.stderr and "is `loom server` running" not in out.stderr


def test_plain_http_to_the_https_port_gets_no_http_answer(tls_server) -> None:
    host, port = tls_server.https.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v1/catalog/services HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/")
    out = _curl(f"http://{tls_server.https}/v1/catalog/services")
    assert out.returncode != 0 and out.stdout == ""


def test_a_client_trusting_another_ca_refuses_the_server(tls_server, tmp_path: Path) -> None:
    other = ScratchCA(tmp_path, "Other CA")
    client = Client(f"https://{tls_server.https}", tls=TlsSettings(ca_file=str(other.file)))
    with pytest.raises(ClientError, match="certificate verify failed"):
        client.get("/v1/catalog/services")
    out = _curl("--cacert", str(other.file), f"https://{tls_server.https}/v1/status/leader")
    assert out.returncode == 60


@pytest.mark.parametrize("kind", ["expired", "self-signed"])
def test_our_client_refuses_a_server_certificate_that_is_expired_or_self_signed(
    kind: str, tmp_path: Path
) -> None:
    ca = ScratchCA(tmp_path)
    bad = ca.issue("server", expired=kind == "expired", self_signed=kind == "self-signed")
    server = start_server("--https-addr", "127.0.0.1:0", "--tls-cert-file", str(bad.cert),
                          "--tls-key-file", str(bad.key))  # fmt: skip
    try:
        client = Client(f"https://{server.https}", tls=TlsSettings(ca_file=str(ca.file)))
        reason = "certificate has expired" if kind == "expired" else "self-signed certificate"
        with pytest.raises(ClientError, match=reason):
            client.get("/v1/status/leader")
    finally:
        server.stop()


def test_given_certificate_files_are_served_instead_of_the_built_in_one(tmp_path: Path) -> None:
    ca = ScratchCA(tmp_path)
    good = ca.issue("server")
    server = start_server("--https-addr", "127.0.0.1:0", "--tls-cert-file", str(good.cert),
                          "--tls-key-file", str(good.key))  # fmt: skip
    try:
        assert server.ca_file == ""  # nothing of the built-in CA is offered
        client = Client(f"https://{server.https}", tls=TlsSettings(ca_file=str(ca.file)))
        assert client.get("/v1/status/leader") == "127.0.0.1:8300"
    finally:
        server.stop()


def test_verify_incoming_refuses_clients_without_a_certificate_of_the_ca(tmp_path: Path) -> None:
    ca = ScratchCA(tmp_path)
    server_cert, client_cert = ca.issue("server"), ca.issue("client", client=True)
    stranger = ScratchCA(tmp_path, "Stranger CA").issue("intruder", client=True)
    server = start_server("--https-addr", "127.0.0.1:0", "--tls-cert-file", str(server_cert.cert),
                          "--tls-key-file", str(server_cert.key), "--tls-ca-file", str(ca.file),
                          "--tls-verify-incoming")  # fmt: skip
    try:
        url = f"https://{server.https}/v1/status/leader"
        assert _curl("--cacert", str(ca.file), url).returncode != 0
        out = _curl("--cacert", str(ca.file), "--cert", str(stranger.cert), "--key",
                    str(stranger.key), url)  # fmt: skip
        assert out.returncode != 0
        out = _curl("--cacert", str(ca.file), "--cert", str(client_cert.cert), "--key",
                    str(client_cert.key), url)  # fmt: skip
        assert out.returncode == 0 and out.stdout.strip() == '"127.0.0.1:8300"', out
        cli = _loom("catalog", "services", "--http-addr", f"https://{server.https}",
                    "--ca-file", str(ca.file), "--client-cert", str(client_cert.cert),
                    "--client-key", str(client_cert.key))  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        host, port = server.https.rsplit(":", 1)
        c = consul.Consul(host=host, port=int(port), scheme="https", verify=str(ca.file),
                          cert=(str(client_cert.cert), str(client_cert.key)))  # fmt: skip
        assert c.status.leader() == "127.0.0.1:8300"
    finally:
        server.stop()


def test_https_only_says_so_and_serves_no_plain_http(tmp_path: Path) -> None:
    server = ServerProcess(["--dev", "--no-http", "--https-addr", "127.0.0.1:0",
                            "--grpc-addr", "127.0.0.1:0"]).start()  # fmt: skip
    try:
        assert server.http == "" and server.https
        context = ssl.create_default_context(cafile=server.ca_file)
        host, port = server.https.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw, context.wrap_socket(
            raw, server_hostname="localhost"
        ) as tls:
            tls.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")
        ready = "".join(server.ready_lines)
        assert "HTTP API on http://" not in ready
        assert "HTTPS only (no plain HTTP listener)" in ready
    finally:
        server.stop()
