"""Asking the upstream resolvers: UDP with EDNS0, TCP when truncated, next server on failure.

Each attempt uses a fresh connected UDP socket (a random source port per query, and an ICMP
"port unreachable" surfaces at once as ConnectionRefusedError instead of a timeout). A reply
counts only if its ID, QR bit and question match what was sent, and every record parses. A
server gets ``timeout_s`` for its UDP attempt and TCP retry together; a timeout, network error,
unusable reply, SERVFAIL or REFUSED moves on to the next server. The result is the first good
reply, else the last error reply a server gave, else None (the caller answers SERVFAIL).

The proxy's own upstream queries must not be redirected back to it: inside pods it runs as the
proxy UID that ``loom connect redirect-traffic --dns-port`` excludes from the DNS redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Sequence

from loom.dns.metrics import Metrics
from loom.dns.wire import (
    FLAG_TC,
    FORMERR,
    NOTIMP,
    RCODE_MASK,
    REFUSED,
    SERVFAIL,
    Question,
    WireError,
    answers,
    check_response,
    query_for,
)

log = logging.getLogger("loom.dns.forward")

RETRY_RCODES = frozenset({SERVFAIL, REFUSED, NOTIMP, FORMERR})
"""Upstream answers that send us on to the next server (glibc does the same)."""
MAX_MESSAGE = 65535


class UpstreamFailure(Exception):
    """One attempt at one server failed; internal to this module."""


class Forwarder:
    """Sends questions to the upstream servers in order."""

    def __init__(
        self, upstreams: Sequence[tuple[str, int]], timeout_s: float, metrics: Metrics
    ) -> None:
        self.upstreams = tuple(upstreams)
        self.timeout_s = timeout_s
        self.metrics = metrics

    async def forward(self, q: Question) -> bytes | None:
        """The upstream reply to ``q`` (its ID is ours, not the asker's), or None."""
        last_error_reply: bytes | None = None
        for host, port in self.upstreams:
            qid = secrets.randbits(16)
            query = query_for(qid, q)
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await self._udp(host, port, query, qid, q)
                    if _flags(reply) & FLAG_TC:
                        reply = await self._tcp(host, port, query, qid, q)
                check_response(reply)
            except (
                TimeoutError,
                OSError,
                UpstreamFailure,
                WireError,
                asyncio.IncompleteReadError,
            ) as exc:
                self.metrics.upstream_failures += 1
                log.debug("upstream %s:%s failed: %s", host, port, _describe(exc))
                continue
            if _flags(reply) & RCODE_MASK in RETRY_RCODES:
                last_error_reply = reply
                continue
            return reply
        return last_error_reply

    async def _udp(self, host: str, port: int, query: bytes, qid: int, q: Question) -> bytes:
        self.metrics.upstream_queries += 1
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, query)
            while True:  # bounded by the caller's timeout; stray datagrams are skipped
                reply = await loop.sock_recv(sock, MAX_MESSAGE)
                if answers(reply, qid, q):
                    return reply

    async def _tcp(self, host: str, port: int, query: bytes, qid: int, q: Question) -> bytes:
        self.metrics.upstream_queries += 1
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(len(query).to_bytes(2, "big") + query)
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            reply = await reader.readexactly(size)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not answers(reply, qid, q):
            raise UpstreamFailure("TCP reply does not match the query")
        return reply


def _flags(reply: bytes) -> int:
    return reply[2] << 8 | reply[3]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
