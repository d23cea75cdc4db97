"""An http-echo-like app (as ``hashicorp/http-echo``): answers every request with fixed text.

HTTP/1.1 with keep-alive, ``TCP_NODELAY`` and one write per response (Nagle would add 40 ms
otherwise). ``X-Instance`` names the instance, so tests can see load balancing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

from loom.addrs import parse_address


def _response(text: str, instance: str) -> bytes:
    body = (text + "\n").encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"X-Instance: {instance}\r\n\r\n"
    )
    return head.encode() + body


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bytes) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                key = name.strip().lower()
                if key == b"content-length":
                    length = int(value.strip() or b"0")
                elif key == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            writer.write(reply)
            await writer.drain()
            if close or (head.startswith(b"GET / HTTP/1.0") and b"keep-alive" not in head.lower()):
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve_echo(listen: str, text: str, instance: str) -> None:
    addr = parse_address(listen if ":" in listen else f":{listen}", "--listen")
    reply = _response(text, instance)
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, reply), addr.host or "0.0.0.0", addr.port, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    port = server.sockets[0].getsockname()[1]
    print(f"http-echo: listening on {addr.host or '0.0.0.0'}:{port}", flush=True)
    async with server:
        await stop.wait()
