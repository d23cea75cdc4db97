"""Where requests meet sockets: the transport seam of the API client.

``Transport`` is the one thing the client needs from the network: send a ``Request``, return
the ``Response`` or raise a ``ClientError``. ``StreamTransport`` speaks over asyncio streams to
a TCP or unix-socket address, with TLS when asked; ``MockTransport`` answers from a function,
for tests of the client's decisions without a server (httpx's ``MockTransport``).

Standard library only. aiohttp's client would also do, but importing it costs tens of
milliseconds at every CLI start and ~70 ms per SSL context it builds, and megabytes of RSS in
each dataplane agent (issue 17); one request per connection keeps this small: the API's
callers make few requests, and a blocking query holds its connection for the whole wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from loom.addrs import Address
from loom.api.codec import Request, Response, ResponseParser, encode_request
from loom.api.errors import ClientError, ProtocolError, RequestTimeout, UnreachableError

READ_CHUNK = 64 * 1024
"""Bytes asked of the socket per read."""


class Transport(Protocol):
    """Sends one request and returns its response; every failure is a ``ClientError``."""

    async def send(self, request: Request, timeout: float) -> Response: ...


@dataclass(frozen=True)
class TlsSettings:
    """How to verify the server when the address is ``https://`` (or TLS is forced)."""

    ca_file: str | None = None
    """PEM bundle of CAs that sign the server's certificate; None (and no ``ca_pem``): the
    system's CAs."""
    ca_pem: str | None = None
    """The same as PEM text (``CONSUL_CACERT_PEM``, as injected pods are given it); trusted
    besides ``ca_file``."""
    cert_file: str | None = None
    """PEM client certificate, for servers that require one (``--tls-verify-incoming``)."""
    key_file: str | None = None
    """PEM private key of ``cert_file``."""
    context: ssl.SSLContext | None = None
    """A ready context (client certificates, pinning); wins over ``ca_file``."""
    server_name: str | None = None
    """Name checked against the certificate; None: the address's host."""
    always: bool = False
    """Speak TLS even to an address without ``https://`` (``CONSUL_HTTP_SSL=true``)."""

    def ssl_context(self) -> ssl.SSLContext:
        if self.context is not None:
            return self.context
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"cannot load the CA file {self.ca_file}: {exc}") from exc
        if self.ca_pem:
            try:
                context.load_verify_locations(cadata=self.ca_pem)
            except (ValueError, ssl.SSLError) as exc:
                raise ClientError(f"cannot load the CA PEM (CONSUL_CACERT_PEM): {exc}") from exc
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise ClientError(
                    f"cannot load the client certificate {self.cert_file}: {exc}"
                ) from exc
        return context


class StreamTransport:
    """One connection per request to ``address`` (TCP or unix socket, TLS for https)."""

    def __init__(self, address: Address, tls: TlsSettings | None = None) -> None:
        self.address = address
        self.tls = tls or TlsSettings()
        self._context: ssl.SSLContext | None = None

    @property
    def uses_tls(self) -> bool:
        return self.address.tls or self.tls.always

    async def send(self, request: Request, timeout: float) -> Response:
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(request)
        except TimeoutError as exc:
            raise RequestTimeout(f"no answer within {timeout:g} s") from exc
        except ssl.SSLCertVerificationError as exc:
            raise UnreachableError(
                f"TLS: certificate verify failed: {exc.verify_message or exc.reason} "
                "(the CA to trust is given with --ca-file, CONSUL_CACERT or CONSUL_CACERT_PEM)"
            ) from exc
        except ssl.SSLError as exc:
            raise UnreachableError(f"TLS: {exc.reason or exc}") from exc
        except OSError as exc:
            raise UnreachableError(_reason(exc)) from exc

    async def _exchange(self, request: Request) -> Response:
        reader, writer = await self._connect()
        try:
            writer.write(encode_request(request))
            await writer.drain()
            parser = ResponseParser(request.method)
            while not parser.done:
                data = await reader.read(READ_CHUNK)
                if not data:
                    parser.feed_eof()
                    break
                parser.feed(data)
            return parser.result()
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = None
        if self.uses_tls:
            if self._context is None:  # built once: an SSL context is costly to make
                self._context = self.tls.ssl_context()
            context = self._context
        name = self.tls.server_name or (self.address.host if context is not None else None)
        if self.address.is_unix:
            return await asyncio.open_unix_connection(
                self.address.path, ssl=context, server_hostname=name or None
            )
        return await asyncio.open_connection(
            self.address.host, self.address.port, ssl=context, server_hostname=name
        )


def _reason(exc: OSError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed ('h', p)``."""
    if exc.errno and exc.errno > 0:  # name lookup errors (gaierror) are negative
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class MockTransport:
    """Answers each request with ``handler(request)`` (sync or async); records requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    async def send(self, request: Request, timeout: float) -> Response:
        self.requests.append(request)
        try:
            async with asyncio.timeout(timeout):
                answer = self.handler(request)
                if inspect.isawaitable(answer):
                    answer = await answer
        except TimeoutError as exc:
            raise RequestTimeout(f"no answer within {timeout:g} s") from exc
        if not isinstance(answer, Response):
            raise ProtocolError(f"the mock handler returned {type(answer).__name__}")
        return answer
