"""The API client for synchronous callers: the CLI, ``loom local`` and tests.

Each call runs the async client's method in a fresh event loop (``asyncio.run``), so there is
one transport, one error mapping and one address parser for both; the client holds no
connection, so nothing outlives a call. Not for code already inside an event loop: that code
uses ``AsyncClient`` directly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loom.addrs import Address
from loom.api.asyncclient import APIResponse, AsyncClient, http_addr_from
from loom.api.errors import ClientError, NotFoundError
from loom.api.transport import TlsSettings, Transport

__all__ = ["Client", "ClientError", "NotFoundError", "http_addr_from"]


class Client:
    """``AsyncClient``'s request methods, blocking."""

    def __init__(
        self,
        addr: str | None = None,
        timeout: float = 30.0,
        *,
        token: str | None = None,
        tls: TlsSettings | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.aio = AsyncClient(addr, timeout, token=token, tls=tls, transport=transport)
        self.addr: Address = self.aio.addr

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> APIResponse:
        return asyncio.run(self.aio.request(method, path, body, params, timeout))

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None).body

    def put(self, path: str, body: Any = None, **params: str) -> Any:
        return self.request("PUT", path, body, params=params or None).body

    def delete(self, path: str, **params: str) -> Any:
        return self.request("DELETE", path, params=params or None).body
