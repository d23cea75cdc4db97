"""The API client for synchronous callers: the CLI, ``loom local`` and tests.

Each call runs the async client's method in a fresh event loop (``asyncio.run``), so there is
one transport, one error mapping and one address parser for both; the client holds no
connection, so nothing outlives a call. Not for code already inside an event loop: that code
uses ``AsyncClient`` directly.
"""

from __future__ import annotations

import asyncio
import urllib.parse
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

    # -- KV (Consul's /v1/kv and /v1/txn) ------------------------------------------------------

    @staticmethod
    def kv_path(key: str) -> str:
        return "/v1/kv/" + urllib.parse.quote(key, safe="/")

    def kv_get(
        self, key: str, *, recurse: bool = False, keys: bool = False, separator: str = ""
    ) -> Any:
        """The entries at ``key`` (a list; under it with ``recurse``), or the key names with
        ``keys``; None when there is nothing."""
        params = {"recurse": ""} if recurse else {}
        if keys:
            params["keys"] = ""
            if separator:
                params["separator"] = separator
        try:
            return self.request("GET", self.kv_path(key), params=params or None).body
        except NotFoundError:
            return None

    def kv_put(self, key: str, value: bytes, **params: str) -> bool:
        """Write ``value``; ``params`` are Consul's (flags, cas, acquire, release). False when
        a condition failed (a stale cas, a lock held by another session)."""
        return bool(self.request("PUT", self.kv_path(key), value, params=params or None).body)

    def kv_delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        params = {"recurse": ""} if recurse else {}
        if cas is not None:
            params["cas"] = str(cas)
        return bool(self.request("DELETE", self.kv_path(key), params=params or None).body)

    def txn(self, ops: list[dict[str, Any]]) -> Any:
        """Run a ``/v1/txn`` transaction; a failed one raises (409, Consul's Errors list)."""
        return self.put("/v1/txn", ops)
