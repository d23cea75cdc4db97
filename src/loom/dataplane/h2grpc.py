"""A small gRPC server over HTTP/2 for the agent's one streaming service, on a unix socket.

The agent serves SDS to its own Envoy and nothing else; grpcio costs it about 10 MB of RSS
(issue 17: the agent <= 30 MB). gRPC over HTTP/2 is, for one bidirectional call: the client
opens a stream with HEADERS, sends messages in DATA frames (each message a 5-byte prefix,
"compressed" flag and length, then the bytes), and the server answers with HEADERS
(``:status 200``), its messages in DATA frames and trailers (``grpc-status``) ending the
stream. This module speaks that, with the frame helpers of the gRPC health checks'
client (``loom.health.grpc_h2``):

- SETTINGS, PING and GOAWAY as RFC 9113 asks; flow control both ways (our receive windows
  are topped up as data is read; we never send more than Envoy's windows allow);
- header blocks are not decoded: there is no HPACK decoder here, and none is needed, since
  the socket serves one service only (the caller's ``handler`` for every stream: SDS's
  ``StreamSecrets``, and a ``FetchSecrets`` is the same exchange with one request);
  our own header blocks are HPACK literals without indexing (no encoder state);
- a frame larger than our SETTINGS_MAX_FRAME_SIZE, a compressed or oversized message, or a
  malformed frame ends the connection (or the stream) rather than being guessed at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

from loom.health.grpc_h2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    frame,
    hpack_literals,
)

log = logging.getLogger("loom.dataplane.h2grpc")
WINDOW_UPDATE, CONTINUATION = 0x8, 0x9
ACK, PADDED = 0x1, 0x8
MAX_FRAME = 16384
"""Our SETTINGS_MAX_FRAME_SIZE (HTTP/2's default, which we never raise)."""
MAX_MESSAGE = 4 * 1024 * 1024
"""The largest request message accepted (grpcio's default receive limit)."""
DEFAULT_WINDOW = 65535
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x4, 0x5
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, CANCEL = 0x1, 0x3, 0x6, 0x8
GRPC_OK, GRPC_INTERNAL = 0, 13

Handler = Callable[[AsyncIterator[bytes]], AsyncGenerator[bytes, None]]
"""One call: the client's messages in, the server's messages out."""


class _ConnectionError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Stream:
    def __init__(self, window: int) -> None:
        self.window = window
        self.buffer = bytearray()
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.closed_remote = False

    async def messages(self) -> AsyncIterator[bytes]:
        while (message := await self.inbox.get()) is not None:
            yield message


class Connection:
    """One client connection: reads frames, runs ``handler`` once per stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handler: Handler) -> None:  # fmt: skip
        self.reader, self.writer, self.handler = reader, writer, handler
        self.streams: dict[int, _Stream] = {}
        self.last_stream = 0
        self.window = DEFAULT_WINDOW  # the connection's send window (Envoy's receive window)
        self.initial_window = DEFAULT_WINDOW
        self.max_frame = MAX_FRAME
        self.window_grew = asyncio.Event()

    async def serve(self) -> None:
        try:
            if await self.reader.readexactly(len(PREFACE)) != PREFACE:
                raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
            self.writer.write(frame(SETTINGS, 0, b""))
            while True:
                kind, flags, sid, payload = await self._read_frame()
                if kind == GOAWAY:
                    return
                self._on_frame(kind, flags, sid, payload)
        except _ConnectionError as exc:
            log.warning("SDS client: %s; closing the connection", exc)
            self.writer.write(frame(GOAWAY, 0, struct.pack(">II", self.last_stream, exc.code)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            for stream in self.streams.values():
                if stream.task is not None:
                    stream.task.cancel()
            for stream in list(self.streams.values()):
                if stream.task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await stream.task
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    async def _read_frame(self) -> tuple[int, int, int, bytes]:
        head = await self.reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        if length > MAX_FRAME:
            raise _ConnectionError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
        sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        return head[3], head[4], sid, await self.reader.readexactly(length)

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == SETTINGS and not flags & ACK:
            self._on_settings(payload)
        elif kind == PING and not flags & ACK:
            self.writer.write(frame(PING, ACK, payload))
        elif kind == WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == HEADERS:
            self._on_headers(flags, sid)
        elif kind == CONTINUATION:
            pass  # the rest of a header block we do not decode
        elif kind == DATA:
            self._on_data(flags, sid, payload)
        elif kind == RST_STREAM:
            stream = self.streams.pop(sid, None)
            if stream is not None and stream.task is not None:
                stream.task.cancel()

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack(">HI", payload[i : i + 6])
            if key == INITIAL_WINDOW_SIZE:
                if value > 0x7FFFFFFF:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "initial window too large")
                for stream in self.streams.values():
                    stream.window += value - self.initial_window
                self.initial_window = value
            elif key == MAX_FRAME_SIZE:
                self.max_frame = min(max(value, MAX_FRAME), 1 << 24)
        self.writer.write(frame(SETTINGS, ACK, b""))
        self.window_grew.set()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload not 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            self.window += increment
        elif (stream := self.streams.get(sid)) is not None:
            stream.window += increment
        self.window_grew.set()

    def _on_headers(self, flags: int, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            if sid % 2 == 0:
                raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS on even stream {sid}")
            if sid <= self.last_stream:
                return  # trailers of a stream we have ended or reset
            self.last_stream = sid
            stream = self.streams[sid] = _Stream(self.initial_window)
            stream.task = asyncio.create_task(self._call(sid, stream))
        if flags & END_STREAM:
            self._end_remote(stream)

    def _end_remote(self, stream: _Stream) -> None:
        if not stream.closed_remote:
            stream.closed_remote = True
            stream.inbox.put_nowait(None)

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if payload:  # give back what the frame used of our windows
            self.writer.write(frame(WINDOW_UPDATE, 0, struct.pack(">I", len(payload))))
        stream = self.streams.get(sid)
        if stream is None or stream.closed_remote:
            return  # a stream we reset or that has ended: its data is dropped
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise _ConnectionError(PROTOCOL_ERROR, "bad DATA padding")
            data = payload[1 : len(payload) - payload[0]]
        else:
            data = payload
        if payload and not flags & END_STREAM:
            self.writer.write(frame(WINDOW_UPDATE, 0, struct.pack(">I", len(payload)), sid))
        stream.buffer += data
        while len(stream.buffer) >= 5:
            compressed, size = stream.buffer[0], int.from_bytes(stream.buffer[1:5], "big")
            if compressed or size > MAX_MESSAGE:
                why = "a compressed message" if compressed else f"a message of {size} bytes"
                log.warning("SDS client sent %s on stream %d; resetting it", why, sid)
                self.writer.write(frame(RST_STREAM, 0, struct.pack(">I", CANCEL), sid))
                if stream.task is not None:
                    stream.task.cancel()
                del self.streams[sid]
                return
            if len(stream.buffer) < 5 + size:
                break
            stream.inbox.put_nowait(bytes(stream.buffer[5 : 5 + size]))
            del stream.buffer[: 5 + size]
        if flags & END_STREAM:
            self._end_remote(stream)

    async def _send(self, sid: int, stream: _Stream, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = min(len(view), self.window, stream.window, self.max_frame)
            if room <= 0:
                self.window_grew.clear()
                await self.window_grew.wait()
                continue
            self.writer.write(frame(DATA, 0, bytes(view[:room]), sid))
            self.window -= room
            stream.window -= room
            view = view[room:]
        await self.writer.drain()

    async def _call(self, sid: int, stream: _Stream) -> None:
        head = [(":status", "200"), ("content-type", "application/grpc")]
        started, status, message = False, GRPC_OK, ""
        try:
            async with contextlib.aclosing(self.handler(stream.messages())) as answers:
                async for out in answers:
                    if not started:
                        block = hpack_literals(head)
                        self.writer.write(frame(HEADERS, END_HEADERS, block, sid))
                        started = True
                    await self._send(sid, stream, b"\x00" + struct.pack(">I", len(out)) + out)
        except Exception as exc:  # the call fails, the connection and the agent do not
            log.exception("SDS call on stream %d failed", sid)
            status, message = GRPC_INTERNAL, type(exc).__name__
        trailers = [("grpc-status", str(status))] + ([("grpc-message", message)] if message else [])
        block = hpack_literals(trailers if started else head + trailers)
        self.writer.write(frame(HEADERS, END_HEADERS | END_STREAM, block, sid))
        self.streams.pop(sid, None)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()


class Server:
    """``handler`` served on the unix socket ``path``; ``stop`` closes it and every call."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None
        self.connections: dict[asyncio.Task[None], Connection] = {}

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[task] = connection = Connection(reader, writer, self.handler)
        try:
            await connection.serve()
        finally:
            self.connections.pop(task, None)

    async def start(self, path: Path) -> None:
        self.server = await asyncio.start_unix_server(self._accept, str(path))

    async def stop(self) -> None:
        """Stop listening, close every connection (their calls end with it) and wait for them.
        Connections are closed, not their tasks cancelled: asyncio's stream server would log
        a cancelled connection task as an error (Python 3.11)."""
        if self.server is not None:
            self.server.close()
        tasks = list(self.connections.items())
        for _, connection in tasks:
            connection.writer.close()
        for task, _ in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.wait_closed()
