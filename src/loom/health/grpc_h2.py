"""A ``grpc.health.v1.Health/Check`` call spoken over HTTP/2 directly, for the gRPC checks
grpcio cannot run: ``GRPCUseTLS`` with ``TLSSkipVerify``.

grpcio verifies every TLS peer (it has no "skip verification" switch, and handing it the
peer's own certificate as a root only works for self-signed ones), while Consul's
``TLSSkipVerify`` accepts any certificate. So this path opens the TLS connection itself with
the standard library (``ssl.CERT_NONE``, ALPN ``h2``, SNI ``TLSServerName`` or the host),
sends the HTTP/2 preface, one HEADERS frame (HPACK literals without indexing: no encoder
state) and one DATA frame carrying the request, and reads frames until the response
message arrives. The answer's status is read from the message; headers and trailers are not
decoded (that would need an HPACK decoder), so a call the server refuses (no message, only
trailers, or a reset) is critical with a generic output instead of grpcio's status text.

Every read is bounded by the check's timeout and by ``MAX_FRAME`` so a hostile or broken
peer gives a critical result, never a hang or a large allocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

from loom.health.errors import HealthError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
STREAM = 1
MAX_FRAME = 1 << 16
"""The largest frame accepted (HTTP/2's default SETTINGS_MAX_FRAME_SIZE is 16 KiB; a health
answer is a few bytes)."""


CLOSE_WAIT_S = 1.0
"""How long closing the connection may take once the answer is in."""


class GrpcH2Error(HealthError):
    """The peer did not answer the call with a health message (the text says what it did)."""


def frame(kind: int, flags: int, payload: bytes, stream: int = 0) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream
    ) + payload


def _hpack_int(value: int, prefix_bits: int = 7) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out, value = bytearray([limit]), value - limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literals(headers: list[tuple[str, str]]) -> bytes:
    """A header block of literals without indexing, new names, no Huffman (RFC 7541 6.2.2)."""
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + _hpack_int(len(n)) + n + _hpack_int(len(v)) + v
    return bytes(out)


def request_frames(authority: str, message: bytes) -> bytes:
    """The preface, our SETTINGS, and the call as one HEADERS and one DATA frame."""
    block = hpack_literals([
        (":method", "POST"), (":scheme", "https"), (":path", "/grpc.health.v1.Health/Check"),
        (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers"),
    ])  # fmt: skip
    body = b"\x00" + struct.pack(">I", len(message)) + message
    return (
        PREFACE
        + frame(SETTINGS, 0, b"")
        + frame(HEADERS, END_HEADERS, block, STREAM)
        + frame(DATA, END_STREAM, body, STREAM)
    )


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    if length > MAX_FRAME:
        raise GrpcH2Error(f"frame of {length} bytes is too large")
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return head[3], head[4], stream, await reader.readexactly(length)


async def health_call(
    host: str, port: int, message: bytes, server_name: str, timeout_s: float
) -> bytes:
    """The response message of one Health/Check call over TLS without verification.

    Raises ``GrpcH2Error`` (the peer's answer was no health message), ``TimeoutError``,
    ``OSError``, ``ssl.SSLError`` or ``asyncio.IncompleteReadError``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with asyncio.timeout_at(deadline):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=server_name or host
        )
    try:
        async with asyncio.timeout_at(deadline):
            return await _exchange(reader, writer, f"{host}:{port}", message)
    finally:
        writer.close()
        # a peer may never answer TLS's close_notify: the answer is in, do not wait long
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), CLOSE_WAIT_S)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str, message: bytes
) -> bytes:
    writer.write(request_frames(authority, message))
    await writer.drain()
    data = bytearray()
    while True:
        kind, flags, stream, payload = await _read_frame(reader)
        if kind == SETTINGS and not flags & ACK:
            writer.write(frame(SETTINGS, ACK, b""))
        elif kind == PING and not flags & ACK:
            writer.write(frame(PING, ACK, payload))
        elif kind == GOAWAY:
            raise GrpcH2Error("the server sent GOAWAY")
        elif kind == RST_STREAM and stream == STREAM:
            raise GrpcH2Error("the server reset the call")
        elif kind == DATA and stream == STREAM:
            data += payload
            if len(data) > MAX_FRAME:
                raise GrpcH2Error("the answer is too large")
            if len(data) >= 5:
                size = int.from_bytes(data[1:5], "big")
                if len(data) >= 5 + size:
                    return bytes(data[5 : 5 + size])
        if kind in (HEADERS, DATA) and stream == STREAM and flags & END_STREAM:
            raise GrpcH2Error("the server ended the call without a health status")


__all__ = ["GrpcH2Error", "health_call", "hpack_literals", "request_frames"]
