"""Starts real `loom server` processes for tests (no mocks): random ports, parsed from stdout."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ServerProcess:
    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        trust: str = "",
        identity: tuple[str, str] | None = None,
    ) -> None:
        self.args = args
        self.env = env
        self.trust = trust
        """CA file ``request`` verifies an HTTPS-only server with (default: its ``ca_file``)."""
        self.identity = identity
        """Client certificate and key ``request`` presents to an HTTPS-only server."""
        self.proc: subprocess.Popen[str] | None = None
        self.http = ""
        self.grpc = ""
        self.https = ""
        self.grpc_tls = ""
        self.ca_file = ""
        self.ready_lines: list[str] = []

    def start(self, timeout: float = 15.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "loom", "server", *self.args]
        if "--ca-sign-workers" not in self.args:
            # Test servers sign in-process unless a test asks for workers (the CSR signing
            # and worker tests do): a worker process per server would only slow the suite.
            cmd += ["--ca-sign-workers", "0"]
        profile = os.environ.get("LOOM_SERVER_PROFILE")
        if profile:  # benches only: cProfile switched by SIGUSR1/SIGUSR2 (profiled.py)
            cmd[1:3] = [str(Path(__file__).with_name("profiled.py")), profile]
        # stderr (the server's log) goes to a file: an undrained pipe would block the server.
        self.log = tempfile.NamedTemporaryFile(prefix="loom-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, **(self.env or {})},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                err = Path(self.log.name).read_text(errors="replace")
                raise RuntimeError(f"loom server exited early: {err}")
            self.ready_lines.append(line)
            if m := re.match(r"loom server: HTTP API on http://(\S+)", line):
                self.http = m.group(1)
            if m := re.match(r"loom server: xDS \(gRPC ADS\) on (\S+)", line):
                self.grpc = m.group(1)
            if m := re.match(r"loom server: HTTPS API on https://(\S+)", line):
                self.https = m.group(1)
            if m := re.match(r"loom server: xDS \(gRPC ADS over TLS\) on (\S+)", line):
                self.grpc_tls = m.group(1)
            if m := re.match(r"loom server: TLS: .* clients trust (\S+)", line):
                self.ca_file = m.group(1)
            if line.startswith("loom server: datacenter"):
                return self
        raise RuntimeError("loom server did not report readiness in time")

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        base, context = f"http://{self.http}", None
        if not self.http:  # HTTPS only: verified, by the IP address dialed
            base = f"https://{self.https}"
            context = ssl.create_default_context(cafile=self.trust or self.ca_file)
            if self.identity is not None:
                context.load_cert_chain(*self.identity)
        req = urllib.request.Request(
            f"{base}{path}", data=data, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30, context=context) as resp:
                raw = resp.read().decode()
                status, headers = resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode()
            status, headers = exc.code, dict(exc.headers)
        try:
            parsed = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            parsed = raw
        return status, parsed, headers

    @property
    def wan(self) -> str:
        """The address another datacenter's server joins this one at (``--join-wan``)."""
        return self.http or f"https://{self.https}"

    def get(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def put(self, path: str, body: Any = None) -> Any:
        status, out, _ = self.request("PUT", path, body if body is not None else b"")
        assert status == 200, (path, status, out)
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def start_server(
    *extra: str,
    data_dir: Path | None = None,
    https_only: bool = False,
    trust: str = "",
    identity: tuple[str, str] | None = None,
) -> ServerProcess:
    """A server on loopback ports; ``https_only``: its API on HTTPS alone (``--no-http``),
    which ``request`` verifies with ``trust`` (default: the built-in CA's ``ca.pem``),
    presenting ``identity`` (certificate and key files) when given."""
    store = ["--data-dir", str(data_dir)] if data_dir else ["--dev"]
    api = ["--no-http", "--https-addr", "127.0.0.1:0"] if https_only else []
    api = api or ["--http-addr", "127.0.0.1:0"]
    return ServerProcess(
        [*store, *api, "--grpc-addr", "127.0.0.1:0", *extra], trust=trust, identity=identity
    ).start()


def acl_flags(management: str = "") -> list[str]:
    """ACLs on, default deny; with ``management``, that secret is the initial management
    token (without, the test bootstraps one through ``PUT /v1/acl/bootstrap``)."""
    token = ["--acl-initial-management-token", management] if management else []
    return ["--acl-default-policy", "deny", *token]


@contextlib.contextmanager
def acl_server(
    management: str = "", *extra: str, data_dir: Path | None = None
) -> Iterator[ServerProcess]:
    """A real server with ``acl_flags(management)`` and ``extra``, stopped when the block
    ends (also when it fails)."""
    server = start_server(*acl_flags(management), *extra, data_dir=data_dir)
    try:
        yield server
    finally:
        server.stop()
