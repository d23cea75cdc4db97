"""Process helpers for e2e tests with real Envoy: apps, dataplanes, curl, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP right now (DNS servers bind both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no loopback port free for both UDP and TCP")


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.work: Path | None = None
        self._fh = open(log, "ab")  # noqa: SIM115
        self.p = subprocess.Popen(
            argv, stdout=self._fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._fh.close()
        return self.p.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def loom_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "loom", *args]


def wait_for(fn: Callable[[], T | None], timeout: float = 20, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f": {last}" if last else ""))


def start_echo(tmp: Path, text: str, port: int, instance: str = "") -> Proc:
    proc = Proc(
        loom_argv(
            "http-echo", "--text", text, "--listen", f"127.0.0.1:{port}", "--instance", instance
        ),
        tmp / f"echo-{port}.log",
    )
    wait_for(lambda: "listening" in proc.output(), 10, f"http-echo on {port}")
    return proc


def start_dataplane(tmp: Path, proxy_id: str, http: str, grpc: str, *extra: str) -> Proc:
    work = tmp / f"dp-{proxy_id}-{time.monotonic_ns()}"
    proc = Proc(
        loom_argv("dataplane", "--proxy-id", proxy_id, "--http-addr", http, "--grpc-addr", grpc,
                  "--work-dir", str(work), "--drain-seconds", "0.2", *extra),
        tmp / f"{work.name}.log",
    )  # fmt: skip
    proc.work = work
    return proc


def envoy_admin(work: Path, path: str) -> str:
    """GET an Envoy admin path of the dataplane whose work dir is ``work``."""
    import urllib.request

    addr = (work / "admin-address").read_text().strip()
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as resp:
        return str(resp.read().decode())


def curl(url: str, *extra: str, timeout: float = 5) -> tuple[int, str]:
    out = subprocess.run(
        ["curl", "-s", "-m", str(timeout), *extra, url], capture_output=True, text=True,
        timeout=timeout + 5,
    )  # fmt: skip
    return out.returncode, out.stdout


def connects(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False
