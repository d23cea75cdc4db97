"""The HTTP API under many connections, against real ``loom server`` processes: abandoned
blocking queries are cancelled, SIGTERM ends hundreds of watchers at once, one client IP is
capped at Consul's ``http_max_conns_per_client`` while others are served, idle keep-alive
connections are closed.

The number of blocking queries in flight is read from ``X-Loom-Blocking-Queries``, a header
of Loom's own endpoints (``/v1/loom/*``)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.server import ServerProcess, start_server

REFUSAL = b"Your IP is issuing too many concurrent connections, please rate limit your calls"


def _connect(server: ServerProcess, source: str = "127.0.0.1") -> socket.socket:
    host, port = server.http.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    return sock


def _send_get(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: loom\r\n\r\n".encode())


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (all of Loom's)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        body += chunk
    return status, headers, body


def _get(server: ServerProcess, path: str, source: str = "127.0.0.1") -> tuple[int, dict[str, str]]:
    with contextlib.closing(_connect(server, source)) as sock:
        _send_get(sock, path)
        status, headers, _ = _read_response(sock)
    return status, headers


def _watchers(server: ServerProcess, source: str = "127.0.0.1") -> int:
    status, headers = _get(server, "/v1/loom/dns-table", source)
    assert status == 200
    return int(headers["x-loom-blocking-queries"])


def _until(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _catalog_index(server: ServerProcess) -> int:
    status, headers = _get(server, "/v1/catalog/services")
    assert status == 200
    return int(headers["x-consul-index"])


@contextlib.contextmanager
def _blocking_queries(
    server: ServerProcess, n: int, source: str = "127.0.0.1"
) -> Iterator[list[socket.socket]]:
    index = _catalog_index(server)
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = _connect(server, source)
            socks.append(sock)
            _send_get(sock, f"/v1/catalog/services?index={index}&wait=10m")
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_abandoned_blocking_queries_leave_no_handler_waiting() -> None:
    server = start_server("--http-max-conns-per-client", "0")
    try:
        with _blocking_queries(server, 300):
            _until(lambda: _watchers(server) == 300)
        _until(lambda: _watchers(server) == 0)
        assert server.get("/v1/catalog/services") == {"consul": []}  # the server's own only
    finally:
        server.stop()


def test_sigterm_with_500_watchers_answers_them_and_exits_in_under_two_seconds(
    tmp_path: Path,
) -> None:
    server = start_server("--http-max-conns-per-client", "0", data_dir=tmp_path)
    try:
        server.put("/v1/agent/service/register", {"Name": "web", "Port": 8080})
        with _blocking_queries(server, 500) as socks:
            _until(lambda: _watchers(server) == 500)
            assert server.proc is not None
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            rc = server.proc.wait(30)
            took = time.monotonic() - started
            print(f"SIGTERM with 500 blocking queries: exit {rc} after {took:.2f} s")
            assert rc == 0
            assert took < 10.0
            answers = [_read_response(sock) for sock in socks]
        assert {status for status, _, _ in answers} == {200}
        assert all(b'"web"' in body for _, _, body in answers)
    finally:
        server.stop()
    again = start_server(data_dir=tmp_path)
    try:
        assert "web" in again.get("/v1/catalog/services")
    finally:
        again.stop()


def test_a_client_over_its_connection_cap_gets_429_while_others_are_served() -> None:
    server = start_server()  # default cap: 200
    try:
        with _blocking_queries(server, 200) as socks:
            _until(lambda: _watchers(server, "127.0.0.2") == 200)
            with contextlib.closing(_connect(server)) as extra:
                _send_get(extra, "/v1/catalog/services")
                status, headers, body = _read_response(extra)
                assert status == 429
                assert body.strip() == REFUSAL
                assert headers["connection"] == "close"
                assert extra.recv(100) == b""  # and closed
            status, _ = _get(server, "/v1/catalog/services", "127.0.0.2")
            assert status == 200
            socks.pop().close()
            _until(lambda: _watchers(server, "127.0.0.2") == 199)
            status, _ = _get(server, "/v1/catalog/services")
            assert status == 200  # a freed slot is reusable
    finally:
        server.stop()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    server = start_server("--http-idle-timeout", "1")
    try:
        with contextlib.closing(_connect(server)) as sock:
            _send_get(sock, "/v1/catalog/services")
            status, headers, _ = _read_response(sock)
            assert status == 200
            assert headers.get("connection", "keep-alive").lower() != "close"
            started = time.monotonic()
            assert sock.recv(100) == b""  # the server closed it (a timeout would raise)
            idle = time.monotonic() - started
        print(f"idle keep-alive connection closed after {idle:.2f} s")
        assert 0.5 < idle < 10.0
        with contextlib.closing(_connect(server)) as silent:
            assert silent.recv(100) == b""  # one that never sends a request too
    finally:
        server.stop()


def test_the_connection_flags_refuse_values_out_of_range() -> None:
    for flag, value in (
        ("--http-max-conns-per-client", "-1"),
        ("--http-idle-timeout", "0"),
        ("--http-idle-timeout", "nan"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "loom", "server", "--dev", flag, value],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode != 0
        assert flag in out.stderr
