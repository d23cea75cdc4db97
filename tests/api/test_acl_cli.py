"""The CLI carries an ACL token from --token, --token-file, LOOM_HTTP_TOKEN or
CONSUL_HTTP_TOKEN to a real server with ACLs deny; without one it shows the refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.server import ServerProcess, acl_server, start_server

ROOT = str(uuid.uuid4())


def loom(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if "HTTP_TOKEN" not in k}
    return subprocess.run(
        [sys.executable, "-m", "loom", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
    )


def test_every_way_of_giving_the_token_reaches_the_server(tmp_path: Path) -> None:
    with acl_server(ROOT) as server:
        addr = ["--http-addr", server.http]
        svc = tmp_path / "svc.json"
        svc.write_text(json.dumps({"service": {"name": "web", "port": 8080}}))
        refused = loom("services", "register", str(svc), *addr)
        assert refused.returncode != 0
        assert "lacks permission 'service:write' on \"web\"" in refused.stderr
        assert loom("services", "register", str(svc), *addr, "--token", ROOT).returncode == 0
        token_file = tmp_path / "token"
        token_file.write_text(ROOT + "\n")
        ways: list[tuple[list[str], dict[str, str]]] = [
            (["--token", ROOT], {}),
            (["--token-file", str(token_file)], {}),
            ([], {"LOOM_HTTP_TOKEN": ROOT}),
            ([], {"CONSUL_HTTP_TOKEN": ROOT}),
            ([], {"CONSUL_HTTP_TOKEN_FILE": str(token_file)}),
        ]
        for flags, env in ways:
            out = loom("catalog", "services", *addr, *flags, env=env)
            assert (out.returncode, out.stdout.split()) == (0, ["consul", "web"]), (flags, env, out.stderr)
        # no token: the anonymous token sees nothing (filtered), and says nothing wrong
        assert loom("catalog", "services", *addr).stdout == ""
        garbage = loom("catalog", "services", *addr, "--token", str(uuid.uuid4()))
        assert garbage.returncode != 0 and "ACL not found" in garbage.stderr


def test_the_server_warns_when_acls_are_off_on_an_address_others_can_reach() -> None:
    open_server = ServerProcess(
        ["--dev", "--http-addr", "0.0.0.0:0", "--grpc-addr", "127.0.0.1:0"]
    ).start()
    try:
        assert "ACLs are off and the server listens on 0.0.0.0:" in open_server.log_text()
    finally:
        open_server.stop()
    closed = start_server()  # loopback only: no warning
    try:
        assert "ACLs are off" not in closed.log_text()
    finally:
        closed.stop()
