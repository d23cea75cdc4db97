"""The one way this server talks to another datacenter: ``call``, an HTTP request to one of
its servers.

Everything that crosses the WAN goes through ``call`` (``?dc=`` forwarding, replication from
the primary, the federated CA's signing requests, following other datacenters' states), so
which server is tried, how long a dead one may cost and what a caller sees when none answers
are decided once. A datacenter none of whose known servers can be reached raises
``NoPathToDatacenter``, which the HTTP API answers as Consul does (500 ``No path to
datacenter``). Losing the WAN link costs a caller at most ``CONNECT_TIMEOUT_S`` per known
server, never a local read or write (nothing local waits on this module).

A server address is ``HOST:PORT`` (plain HTTP) or ``https://HOST:PORT`` (what ``--join-wan``
gave, or what the peer's datacenter advertises in its federation state). HTTPS peers are
verified with the context ``use_tls`` installs (``loom.server.tls.wan_client_context``: the
CA file the server was given, or the CA its own certificate chains to) and get this server's
certificate as a client certificate. A server with no plain HTTP listener of its own
(``--no-http``) sends nothing to other datacenters in plain text: a plain address is refused
before any byte is sent (``PlainWanRefused``), as Consul's ``verify_outgoing``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from loom.domain.federation import is_tls_server, server_url
from loom.server.errors import ServerError

if TYPE_CHECKING:
    from loom.control.state import State

log = logging.getLogger("loom.server.wan")

NO_PATH = "No path to datacenter"
CONNECT_TIMEOUT_S = 2.0
"""How long a TCP connect to one server of another datacenter may take before the next one
is tried (a dropped link answers nothing: without this a caller would wait the whole
timeout)."""
DEFAULT_TIMEOUT_S = 30.0
"""A whole request's time limit unless the caller gives one (a forwarded blocking query gives
its wait plus a margin)."""
TOKEN_HEADER = "X-Consul-Token"

Query = Mapping[str, str] | Sequence[tuple[str, str]]


class NoPathToDatacenter(ServerError):
    """No server of the datacenter is known or none answered (HTTP 500, as Consul)."""

    def __init__(self, datacenter: str, reason: str = "") -> None:
        super().__init__(NO_PATH)
        self.datacenter = datacenter
        self.reason = reason


class PlainWanRefused(ServerError):
    """A TLS-only server (``--no-http``) was asked to send a request in plain HTTP."""

    def __init__(self, server: str) -> None:
        super().__init__(
            f"refusing plain HTTP to {server}: this server talks to other datacenters over "
            f"HTTPS only (it has no plain HTTP listener); give https://{server}"
        )


class _Client:
    """One aiohttp session per server state (per event loop), the server of each
    datacenter that answered last (tried first next time), and the TLS of HTTPS peers."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.preferred: dict[str, str] = {}
        self.ssl: ssl.SSLContext | None = None
        """What HTTPS peers are verified with (None: the system's CAs)."""
        self.tls_only = False
        """Plain HTTP peers are refused."""

    def get(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self.session is None or self.session.closed or self.loop is not loop:
            # Keep-alive connections to the other datacenters' servers: forwarding and
            # replication rounds skip a TCP handshake each.
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, limit_per_host=64, ssl=self.ssl if self.ssl is not None else True
                ),
                auto_decompress=False,
            )
            self.loop = loop
        return self.session


_CLIENTS: weakref.WeakKeyDictionary[State, _Client] = weakref.WeakKeyDictionary()


def _state_of(app_or_state: State | web.Application) -> State:
    if isinstance(app_or_state, web.Application):
        from loom.server.http import STATE

        return app_or_state[STATE]
    return app_or_state


def _order(servers: tuple[str, ...], preferred: str | None) -> list[str]:
    out = list(servers)
    if preferred in out:
        out.remove(preferred)
        out.insert(0, preferred)
    return out


def _client(state: State) -> _Client:
    client = _CLIENTS.get(state)
    if client is None:
        client = _CLIENTS[state] = _Client()
    return client


async def call_server(
    app_or_state: State | web.Application,
    server: str,
    method: str,
    path: str,
    *,
    query: Query | None = None,
    body: bytes | None = None,
    token: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to the server at ``server`` (``HOST:PORT`` or ``https://HOST:PORT``),
    whichever datacenter it is in (``--join-wan`` addresses, before their datacenter is
    known). Raises ``aiohttp.ClientError`` (``aiohttp.ClientSSLError`` when the peer's
    certificate does not verify), ``OSError`` or ``TimeoutError`` when it does not answer,
    ``PlainWanRefused`` when this server is TLS-only and ``server`` is plain."""
    client = _client(_state_of(app_or_state))
    if client.tls_only and not is_tls_server(server):
        raise PlainWanRefused(server)
    session = client.get()
    sent = dict(headers or {})
    if token:
        sent[TOKEN_HEADER] = token
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=CONNECT_TIMEOUT_S)
    try:
        async with session.request(
            method, f"{server_url(server)}{path}", params=query, data=body, headers=sent,
            timeout=timeout, allow_redirects=False,
        ) as resp:  # fmt: skip
            raw = await resp.read()
            return resp.status, dict(resp.headers), raw
    except aiohttp.ServerDisconnectedError as exc:
        # What an HTTPS-only server does with a plain request, and (TLS 1.3) one requiring
        # client certificates with a certificate it does not trust: say which it may be.
        if is_tls_server(server):
            why = "if it requires client certificates, it may have refused this server's"
        else:
            why = f"if it serves HTTPS only, give https://{server}"
        raise aiohttp.ServerDisconnectedError(
            f"{server} closed the connection without an answer ({why})"
        ) from exc


async def call(
    app_or_state: State | web.Application,
    dc: str,
    method: str,
    path: str,
    *,
    query: Query | None = None,
    body: bytes | None = None,
    token: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to some server of ``dc``: ``(status, headers, body)`` of its answer.

    Known servers (``State.federation.servers(dc)``) are tried in turn, the one that answered
    last first; a server that cannot be connected to (refused, unreachable, no answer within
    ``CONNECT_TIMEOUT_S``) or drops the connection gives way to the next. ``token`` goes in
    ``X-Consul-Token`` (None: no token, the anonymous one). Raises ``NoPathToDatacenter`` when
    no server is known or none answered within ``timeout_s``.
    """
    state = _state_of(app_or_state)
    servers = state.federation.servers(dc)
    if not servers:
        raise NoPathToDatacenter(dc, "no server known")
    client = _client(state)
    reasons: list[str] = []
    for server in _order(servers, client.preferred.get(dc)):
        try:
            answer = await call_server(
                state, server, method, path, query=query, body=body, token=token,
                timeout_s=timeout_s, headers=headers,
            )  # fmt: skip
        except (
            aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError, PlainWanRefused
        ) as exc:  # fmt: skip
            reasons.append(f"{server}: {exc or type(exc).__name__}")
            continue
        except TimeoutError:
            reasons.append(f"{server}: no answer within {timeout_s:g}s")
            break  # it took the whole time: no time left for another
        client.preferred[dc] = server
        return answer
    reason = "; ".join(reasons)
    log.info("no path to datacenter %s: %s", dc, reason)
    raise NoPathToDatacenter(dc, reason)


def use_tls(state: State, context: ssl.SSLContext, tls_only: bool) -> None:
    """Verify HTTPS peers with ``context`` (and present its certificate); ``tls_only``: refuse
    plain HTTP peers. Called once at start, before any call."""
    client = _client(state)
    client.ssl = context
    client.tls_only = tls_only


async def close(app_or_state: State | web.Application) -> None:
    """Close the state's connections to other datacenters (at server shutdown)."""
    client = _CLIENTS.pop(_state_of(app_or_state), None)
    if client is not None and client.session is not None:
        await client.session.close()


__all__ = [
    "NO_PATH",
    "NoPathToDatacenter",
    "PlainWanRefused",
    "call",
    "call_server",
    "close",
    "use_tls",
]
