"""The per-client connection cap of the HTTP API (Consul's ``http_max_conns_per_client``).

One client opening thousands of connections must not starve the others, so every TCP
connection is counted against its peer IP when accepted. Over the cap the connection gets
Consul's answer, a 429 with "Your IP is issuing too many concurrent connections, please rate
limit your calls", before any request is read, and is closed; connections of other addresses
are untouched. The cap sits in front of aiohttp's protocol (it wraps the protocol factory),
so a refused connection never reaches the HTTP layer at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

log = logging.getLogger("loom.server.conns")

REFUSAL_TEXT = b"Your IP is issuing too many concurrent connections, please rate limit your calls\n"
REFUSAL = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(REFUSAL_TEXT)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + REFUSAL_TEXT
)
LINGER_S = 1.0
"""How long a refused connection is kept half-closed so the client reads the 429 (closing
with its request unread would reset the connection and lose the answer)."""


class ConnectionCap:
    """Open connections per client IP; ``limit`` 0 means no limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self.refused = 0

    def admit(self, ip: str) -> bool:
        count = self._open.get(ip, 0)
        if self.limit and count >= self.limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:  # one line, not one per refusal
                log.warning(
                    "%s is over the limit of %d connections per client (%d refused so far)",
                    ip, self.limit, self.refused,
                )  # fmt: skip
            return False
        self._open[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        count = self._open.get(ip, 0) - 1
        if count > 0:
            self._open[ip] = count
        else:
            self._open.pop(ip, None)

    def open_from(self, ip: str) -> int:
        return self._open.get(ip, 0)


class _Capped(asyncio.Protocol):
    """Admits the connection to aiohttp's protocol, or answers 429 and closes it."""

    def __init__(self, inner: asyncio.Protocol, cap: ConnectionCap) -> None:
        self._inner = inner
        self._cap = cap
        self._ip: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._cap.admit(ip):
            stream = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            stream.write(REFUSAL)
            if stream.can_write_eof():
                stream.write_eof()
            asyncio.get_running_loop().call_later(LINGER_S, stream.close)
            return
        self._ip = ip
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ip is None:
            return
        self._cap.release(self._ip)
        self._ip = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ip is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._ip is None:
            return False  # refused: the peer is done, close now
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._ip is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._ip is not None:
            self._inner.resume_writing()


def capped(
    factory: Callable[[], asyncio.Protocol], cap: ConnectionCap
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server`` that applies ``cap`` to ``factory``."""
    if not cap.limit:
        return factory
    return lambda: _Capped(factory(), cap)
