"""`loom k8s connect-init` against a real server's HTTPS API: with ``--ca-file`` it finds the
pod's registration and writes the proxy ID; without the CA it never trusts the server, says
why while it waits, and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, start_server

POD = "web-5c7d"


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    s = start_server("--https-addr", "127.0.0.1:0")
    s.put("/v1/agent/service/register", {
        "ID": f"{POD}-web", "Name": "web", "Port": 8080, "Address": "10.1.0.9",
        "Meta": {"pod-name": POD, "k8s-namespace": "default"},
        "Connect": {"SidecarService": {"Port": 20000}}})  # fmt: skip
    yield s
    s.stop()


def _connect_init(server: ServerProcess, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "LOOM_"))}
    return subprocess.run(
        [sys.executable, "-m", "loom", "k8s", "connect-init",
         "--http-addr", f"https://{server.https}", "--pod-name", POD, "--pod-namespace", "default",
         "--output-dir", str(out), "--log-interval", "0.2", *extra],
        capture_output=True, text=True, timeout=60, env=clean,
    )  # fmt: skip


def test_connect_init_over_https_with_the_ca_file_writes_the_proxy_id(server, tmp_path) -> None:
    out = _connect_init(server, tmp_path, "--ca-file", server.ca_file, "--timeout", "20")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "proxyid").read_text() == f"{POD}-web-sidecar-proxy"


def test_connect_init_without_the_ca_does_not_trust_the_server(server, tmp_path) -> None:
    out = _connect_init(server, tmp_path, "--timeout", "1.5")
    assert out.returncode == 1
    assert "certificate verify failed" in out.stderr
    assert not (tmp_path / "proxyid").exists()
