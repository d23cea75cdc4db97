"""The CLI over the HTTP API, run as real subprocesses against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loom.cli.api import format_intentions, format_services


def loom(*args: str, addr: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--http-addr", addr] if addr else []
    return subprocess.run(
        [sys.executable, "-m", "loom", *args, *extra], capture_output=True, text=True, timeout=30
    )


def test_register_list_intentions_and_config_through_the_cli(loom_server, tmp_path: Path) -> None:
    addr = loom_server.http
    svc = tmp_path / "svc.json"
    svc.write_text(json.dumps({"service": {"name": "static-server", "port": 8080,
                                           "connect": {"sidecar_service": {}}}}))  # fmt: skip
    out = loom("services", "register", str(svc), addr=addr)
    assert out.returncode == 0, out.stderr
    assert loom("catalog", "services", addr=addr).stdout.split() == [
        "consul", "static-server", "static-server-sidecar-proxy",
    ]  # fmt: skip
    assert loom("intention", "check", "static-client", "static-server", addr=addr).returncode == 0
    assert (
        loom(
            "intention", "create", "--deny", "static-client", "static-server", addr=addr
        ).returncode
        == 0
    )
    denied = loom("intention", "check", "static-client", "static-server", addr=addr)
    assert (denied.returncode, denied.stdout) == (2, "Denied\n")
    listing = loom("intention", "list", addr=addr).stdout
    assert "static-client  static-server  deny" in listing
    assert loom("intention", "delete", "static-client", "static-server", addr=addr).returncode == 0
    assert loom("intention", "check", "static-client", "static-server", addr=addr).returncode == 0
    entry = tmp_path / "sd.yaml"
    entry.write_text("Kind: service-defaults\nName: static-server\nProtocol: http\n")
    assert loom("config", "write", str(entry), addr=addr).returncode == 0
    read = loom(
        "config", "read", "--kind", "service-defaults", "--name", "static-server", addr=addr
    )
    assert json.loads(read.stdout)["Protocol"] == "http"
    assert (
        loom(
            "config", "delete", "--kind", "service-defaults", "--name", "static-server", addr=addr
        ).returncode
        == 0
    )
    assert loom("services", "deregister", "static-server", addr=addr).returncode == 0


def test_server_errors_are_one_line_without_traceback(loom_server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("Kind: service-defaults\nName: web\nProtocol: smtp\n")
    out = loom("config", "write", str(bad), addr=loom_server.http)
    assert out.returncode == 1
    assert out.stderr.startswith("loom: Invalid request: Protocol: 'smtp'")
    assert len(out.stderr.strip().splitlines()) == 1
    missing = loom("config", "write", str(tmp_path / "missing.yaml"), addr=loom_server.http)
    assert missing.stderr.startswith("loom: cannot read") and missing.returncode == 1


def test_an_unreachable_server_is_one_clear_line() -> None:
    out = loom("catalog", "services", addr="127.0.0.1:1")
    assert out.returncode == 1
    assert out.stderr.startswith("loom: cannot reach the Loom server at 127.0.0.1:1")
    assert "Traceback" not in out.stderr


def test_cli_listings_are_stable(golden) -> None:
    golden.check("cli/services.txt", format_services({"web": ["v1", "v2"], "db": []}))
    golden.check(
        "cli/intentions.txt",
        format_intentions(
            [
                {"SourceNS": "default", "SourceName": "web", "DestinationNS": "default",
                 "DestinationName": "db", "Action": "deny", "Precedence": 9},
                {"SourceNS": "team-a", "SourceName": "*", "DestinationNS": "default",
                 "DestinationName": "db", "Action": "", "Precedence": 8},
            ]
        ),
    )  # fmt: skip
