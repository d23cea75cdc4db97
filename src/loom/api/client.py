"""A small synchronous client of the Loom/Consul HTTP API, for the CLI.

Speaks HTTP over TCP or a unix socket. Every failure becomes ``ClientError`` with one line
that says what to do: the server is unreachable, or it refused the request (its message).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

from loom.addrs import Address, parse_address
from loom.errors import LoomError

DEFAULT_HTTP_ADDR = "127.0.0.1:8500"


class ClientError(LoomError):
    """The server could not be reached, or answered with an error."""


class NotFoundError(ClientError):
    """The server answered 404."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Response:
    status: int
    body: Any
    index: int


def http_addr_from(flag: str | None) -> str:
    return (
        flag
        or os.environ.get("LOOM_HTTP_ADDR")
        or os.environ.get("CONSUL_HTTP_ADDR")
        or (DEFAULT_HTTP_ADDR)
    )


class Client:
    def __init__(self, addr: str | None = None, timeout: float = 30.0) -> None:
        self.addr: Address = parse_address(http_addr_from(addr), "--http-addr")
        self.timeout = timeout

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        if self.addr.is_unix:
            return _UnixConnection(self.addr.path, timeout)
        return http.client.HTTPConnection(self.addr.host, self.addr.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        data = None if body is None else json.dumps(body).encode()
        conn = self._conn(timeout or self.timeout)
        try:
            conn.request(
                method, path + query, body=data, headers={"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ClientError(
                f"cannot reach the Loom server at {self.addr}: {reason} "
                "(is `loom server` running? set --http-addr or LOOM_HTTP_ADDR)"
            ) from exc
        finally:
            conn.close()
        text = raw.decode(errors="replace")
        if resp.status == 404:
            raise NotFoundError(text.strip() or f"{path}: not found")
        if resp.status >= 400:
            raise ClientError(text.strip() or f"{method} {path}: HTTP {resp.status}")
        try:
            parsed = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            parsed = text
        return Response(resp.status, parsed, int(resp.getheader("X-Consul-Index") or 0))

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None).body

    def put(self, path: str, body: Any = None, **params: str) -> Any:
        return self.request("PUT", path, body, params=params or None).body

    def delete(self, path: str, **params: str) -> Any:
        return self.request("DELETE", path, params=params or None).body
