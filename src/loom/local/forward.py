"""A TCP forwarder across network namespaces, for the local mesh's Prometheus.

The node namespace is private (the root namespace gets no address or route into it), yet
Prometheus there must be reachable from the host's loopback, for a browser, the CLI and
``loom server --ui-metrics-url``. ``loom local up`` binds the listening socket in the root
namespace and hands it, inherited, to this program started inside the node namespace
(``ip netns exec``): connections are accepted on the host's side and dialled on the node's.
Run as ``python -m loom.local.forward --fd N --to HOST:PORT``; it exits on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(fd: int, host: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    listener = socket.socket(fileno=fd)
    server = await asyncio.start_server(handle, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loom.local.forward")
    parser.add_argument("--fd", type=int, required=True, help="the inherited listening socket")
    parser.add_argument("--to", required=True, help="HOST:PORT dialled for each connection")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.fd, host, int(port)))


if __name__ == "__main__":
    main()
