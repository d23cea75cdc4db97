"""The agent's SDS socket facing a client that breaks HTTP/2 or gRPC rules, spoken frame by
frame on the real unix socket: the connection (or the one stream) ends, the agent does not,
and a well-behaved client is served afterwards."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from loom.dataplane.h2grpc import FRAME_SIZE_ERROR, WINDOW_UPDATE
from loom.dataplane.sds import SecretStore, serve_sds, socket_path
from loom.health.grpc_h2 import (
    DATA,
    END_HEADERS,
    GOAWAY,
    HEADERS,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    frame,
    hpack_literals,
)

_CALL = hpack_literals([(":method", "POST"), (":scheme", "http"), (":authority", "sds"),
                        (":path", "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"),
                        ("content-type", "application/grpc"), ("te", "trailers")])  # fmt: skip


async def _frames_until(reader: asyncio.StreamReader, kind: int) -> list[tuple[int, bytes]]:
    seen = []
    async with asyncio.timeout(10):
        while True:
            head = await reader.readexactly(9)
            payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
            seen.append((head[3], payload))
            if head[3] == kind:
                return seen


async def _serve(tmp_path: Path) -> tuple[Path, Callable[[], Awaitable[None]]]:
    store = SecretStore()
    store.set("CERT", "KEY", "ROOTS")
    path, _ = socket_path(tmp_path / "w")
    return path, await serve_sds(store, path)


async def _answers(path: Path) -> bool:
    """A well-formed call on a fresh connection gets a DATA frame (the secrets)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    request = b"\x1a\x04leaf"  # DiscoveryRequest{resource_names: ["leaf"]}
    writer.write(PREFACE + frame(SETTINGS, 0, b"") + frame(HEADERS, END_HEADERS, _CALL, 1)
                 + frame(DATA, 0, b"\x00" + struct.pack(">I", len(request)) + request, 1))
    try:
        kinds = [k for k, _ in await _frames_until(reader, DATA)]
        return DATA in kinds
    finally:
        writer.close()


async def test_a_frame_larger_than_our_max_frame_size_ends_the_connection_with_goaway(
    tmp_path: Path,
) -> None:
    path, stop = await _serve(tmp_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(PREFACE + frame(SETTINGS, 0, b"") + frame(DATA, 0, b"x" * 20000, 1))
        _, payload = (await _frames_until(reader, GOAWAY))[-1]
        assert struct.unpack(">II", payload[:8])[1] == FRAME_SIZE_ERROR
        assert await reader.read() == b""  # and the connection is closed
        writer.close()
        assert await _answers(path)
    finally:
        await stop()


async def test_a_compressed_message_resets_its_stream_and_the_connection_lives_on(
    tmp_path: Path,
) -> None:
    path, stop = await _serve(tmp_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(PREFACE + frame(SETTINGS, 0, b"") + frame(HEADERS, END_HEADERS, _CALL, 1)
                     + frame(DATA, 0, b"\x01" + struct.pack(">I", 2) + b"zz", 1))  # fmt: skip
        seen = await _frames_until(reader, RST_STREAM)
        assert WINDOW_UPDATE in [k for k, _ in seen]  # the data was accounted for
        request = b"\x1a\x05roots"
        writer.write(frame(HEADERS, END_HEADERS, _CALL, 3)
                     + frame(DATA, 0, b"\x00" + struct.pack(">I", len(request)) + request, 3))
        _, data = (await _frames_until(reader, DATA))[-1]
        assert b"roots" in data and b"ROOTS" in data
        writer.close()
    finally:
        await stop()
