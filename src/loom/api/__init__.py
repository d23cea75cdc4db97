"""The client of the server's HTTP API: ``AsyncClient`` (and its blocking ``watch``), the
sync facade ``Client``, the errors, and the transport seam.

Layout: ``codec`` (HTTP/1.1 bytes, pure) < ``transport`` (sockets, TLS; a mock for tests) <
``asyncclient`` (requests, error mapping) + ``watching`` (blocking queries) < ``client``
(sync facade). Standard library only, so importing it stays cheap for the CLI.
"""

from loom.api.asyncclient import APIResponse, AsyncClient, http_addr_from, tls_from
from loom.api.client import Client
from loom.api.errors import (
    ClientError,
    HTTPStatusError,
    NotFoundError,
    ProtocolError,
    RequestTimeout,
    UnreachableError,
)
from loom.api.transport import MockTransport, StreamTransport, TlsSettings, Transport
from loom.api.watching import WatchPolicy

__all__ = [
    "APIResponse",
    "AsyncClient",
    "Client",
    "ClientError",
    "HTTPStatusError",
    "MockTransport",
    "NotFoundError",
    "ProtocolError",
    "RequestTimeout",
    "StreamTransport",
    "TlsSettings",
    "Transport",
    "UnreachableError",
    "WatchPolicy",
    "http_addr_from",
    "tls_from",
]
