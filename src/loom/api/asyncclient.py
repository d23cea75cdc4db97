"""The one client of the Loom/Consul HTTP API, async.

Everything that asks the server something goes through ``AsyncClient``: the CLI (through the
sync facade in ``loom.api.client``), the dataplane, the DNS table watch, connect-init and the
Kubernetes controller. Its decisions are made here, once: the address and its default
(``--http-addr``, ``LOOM_HTTP_ADDR``, ``CONSUL_HTTP_ADDR``, ``127.0.0.1:8500``; ``https://``
means TLS), how the server is verified (``--ca-file``, ``LOOM_CACERT``, ``CONSUL_CACERT``,
``CONSUL_CACERT_PEM``, client certificates, ``CONSUL_HTTP_SSL``), the request bytes, the token
and its header (``--token``, ``--token-file``, ``LOOM_HTTP_TOKEN``, ``CONSUL_HTTP_TOKEN``),
Consul's error mapping (a one-line ``ClientError`` that says what to do, ``NotFoundError``
for 404, the server's own message for other errors) and the ``X-Consul-Index`` of every
answer. The network is behind ``Transport`` (``loom.api.transport``) and blocking queries are in
``loom.api.watching``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loom import __version__, defaults
from loom.addrs import Address, parse_address
from loom.api.codec import Request, Response
from loom.api.errors import (
    ClientError,
    HTTPStatusError,
    NotFoundError,
    ProtocolError,
    RequestTimeout,
    UnreachableError,
)
from loom.api.transport import StreamTransport, TlsSettings, Transport
from loom.api.watching import WatchPolicy, watch

HINT = "(is `loom server` running? set --http-addr or LOOM_HTTP_ADDR)"
"""What the user can do when the server does not answer."""

DEFAULT_TIMEOUT_S = 30.0
"""Per-request limit unless the caller gives one (blocking queries compute their own)."""


def http_addr_from(flag: str | None) -> str:
    """The server address: the flag, else ``LOOM_HTTP_ADDR``, ``CONSUL_HTTP_ADDR``, default."""
    return (
        flag
        or os.environ.get("LOOM_HTTP_ADDR")
        or os.environ.get("CONSUL_HTTP_ADDR")
        or defaults.HTTP_ADDR
    )


def token_from(flag: str | None = None, file: str | None = None) -> str | None:
    """The ACL token: ``--token``, else ``--token-file``, else ``LOOM_HTTP_TOKEN``,
    ``CONSUL_HTTP_TOKEN``, then the files ``LOOM_HTTP_TOKEN_FILE``, ``CONSUL_HTTP_TOKEN_FILE``
    (Consul's order); None when none is given."""
    if flag:
        return flag
    env = os.environ
    file = file or None
    if file is None:
        value = env.get("LOOM_HTTP_TOKEN") or env.get("CONSUL_HTTP_TOKEN")
        if value:
            return value
        file = env.get("LOOM_HTTP_TOKEN_FILE") or env.get("CONSUL_HTTP_TOKEN_FILE")
    if not file:
        return None
    try:
        with open(file, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError as exc:
        raise ClientError(f"cannot read the token file {file}: {exc.strerror or exc}") from exc


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def tls_from(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    server_name: str | None = None,
) -> TlsSettings:
    """How to verify the server: each flag, else its environment variable (Loom's name, then
    Consul's): ``LOOM_CACERT``/``CONSUL_CACERT``, the CA as PEM text ``LOOM_CACERT_PEM``/
    ``CONSUL_CACERT_PEM`` (consul-k8s's, as injected pods get it), ``LOOM_CLIENT_CERT``/
    ``CONSUL_CLIENT_CERT``,
    ``LOOM_CLIENT_KEY``/``CONSUL_CLIENT_KEY``, ``LOOM_TLS_SERVER_NAME``/
    ``CONSUL_TLS_SERVER_NAME``; ``CONSUL_HTTP_SSL=true`` speaks TLS to an address given
    without ``https://``, as Consul's CLI does."""
    ssl_flag = (_env("LOOM_HTTP_SSL", "CONSUL_HTTP_SSL") or "").strip().lower()
    return TlsSettings(
        ca_file=ca_file or _env("LOOM_CACERT", "CONSUL_CACERT"),
        ca_pem=_env("LOOM_CACERT_PEM", "CONSUL_CACERT_PEM"),
        cert_file=cert_file or _env("LOOM_CLIENT_CERT", "CONSUL_CLIENT_CERT"),
        key_file=key_file or _env("LOOM_CLIENT_KEY", "CONSUL_CLIENT_KEY"),
        server_name=server_name or _env("LOOM_TLS_SERVER_NAME", "CONSUL_TLS_SERVER_NAME"),
        always=ssl_flag in ("1", "true", "yes", "on"),
    )


@dataclass(frozen=True)
class APIResponse:
    """A successful answer: its status, its body (JSON decoded, else text, None if empty)."""

    status: int
    body: Any
    index: int
    """``X-Consul-Index`` (0 when absent): the index to wait on in the next blocking query."""
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""
    """The body as received (a snapshot file is not JSON)."""


def decode_body(raw: bytes) -> Any:
    """JSON when it parses, else the text; None for an empty body."""
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def consul_index(response: Response) -> int:
    value = response.header("X-Consul-Index").strip()
    return int(value) if value.isascii() and value.isdigit() else 0


class AsyncClient:
    """A client of one server; holds no connection, so it may be shared and reused."""

    def __init__(
        self,
        addr: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        token: str | None = None,
        tls: TlsSettings | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.addr_text = http_addr_from(addr)
        """The address as given (log lines quote it as the user wrote it)."""
        self.addr: Address = parse_address(self.addr_text, "--http-addr")
        self.timeout = timeout
        self.token = token if token is not None else token_from()
        """Sent as ``X-Consul-Token`` when set; None: taken from the environment
        (``token_from``), as Consul's clients do."""
        self.tls = tls if tls is not None else tls_from()
        """How the server is verified over TLS; None given: from the environment."""
        self.transport: Transport = transport or StreamTransport(self.addr, self.tls)

    def build_request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Request:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        headers = {"User-Agent": f"loom/{__version__}", "Accept": "application/json"}
        data = b""
        if isinstance(body, bytes):  # a file, sent as it is (a snapshot)
            data = body
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["X-Consul-Token"] = self.token
        host = "localhost" if self.addr.is_unix else str(self.addr)
        return Request(method, path + query, host, headers, data)

    def check(self, method: str, path: str, response: Response) -> APIResponse:
        """The answer as ``APIResponse``, or the error it stands for."""
        text = response.body.decode("utf-8", errors="replace")
        if response.status == 404:
            raise NotFoundError(text.strip() or f"{path}: not found", 404, text)
        if response.status >= 400:
            message = text.strip() or f"{method} {path}: HTTP {response.status}"
            raise HTTPStatusError(message, response.status, text)
        return APIResponse(
            response.status,
            decode_body(response.body),
            consul_index(response),
            response.headers,
            response.body,
        )

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> APIResponse:
        request = self.build_request(method, path, body, params)
        limit = timeout or self.timeout
        try:
            response = await self.transport.send(request, limit)
        except RequestTimeout as exc:
            raise RequestTimeout(
                f"the Loom server at {self.addr} did not answer {method} {path} within "
                f"{limit:g} s {HINT}",
                f"no answer within {limit:g} s",
            ) from exc
        except UnreachableError as exc:
            # A TLS refusal already says what to do; the server is running.
            hint = "" if exc.reason.startswith("TLS:") else f" {HINT}"
            raise UnreachableError(
                f"cannot reach the Loom server at {self.addr}: {exc.reason}{hint}", exc.reason
            ) from exc
        except ProtocolError as exc:
            raise ProtocolError(
                f"the Loom server at {self.addr} sent a broken answer: {exc.reason}", exc.reason
            ) from exc
        return self.check(method, path, response)

    async def get(self, path: str, **params: str) -> Any:
        return (await self.request("GET", path, params=params or None)).body

    async def put(self, path: str, body: Any = None, **params: str) -> Any:
        return (await self.request("PUT", path, body, params=params or None)).body

    async def delete(self, path: str, **params: str) -> Any:
        return (await self.request("DELETE", path, params=params or None)).body

    def watch(
        self,
        path: str,
        index: int = 0,
        wait: str = "30s",
        *,
        params: Mapping[str, str] | None = None,
        decode: Callable[[Any], Any] | None = None,
        policy: WatchPolicy | None = None,
        label: str | None = None,
        logger: logging.Logger | None = None,
        on_error: Callable[[ClientError, float], None] | None = None,
    ) -> AsyncIterator[tuple[Any, int]]:
        """Blocking queries on ``path``: (body, index) each time the index moves.

        See ``loom.api.watching.watch`` for the rules and the arguments.
        """
        return watch(
            self,
            path,
            index,
            wait,
            params=params,
            decode=decode,
            policy=policy or WatchPolicy(),
            label=label,
            logger=logger,
            on_error=on_error,
        )
