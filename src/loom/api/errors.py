"""The API client's exceptions, drawn in one place (httpx's ``_exceptions.py`` is the model).

::

    ClientError                 the root: every failure of a request, one line for a user
    ├── UnreachableError        no answer: refused, reset, name not found, TLS failed
    │   └── RequestTimeout      no complete answer within the request's timeout
    ├── ProtocolError           an answer that is not HTTP/1.x as the codec reads it
    └── HTTPStatusError         an answer with status >= 400: ``status``, the server's message
        └── NotFoundError       404

``str()`` of each is what the CLI prints after ``loom:``; socket, ssl and asyncio errors are
wrapped at the transport (``raise ... from exc``) and never leave this package.
"""

from __future__ import annotations

from loom.errors import LoomError


class ClientError(LoomError):
    """The server could not be reached, or answered with an error.

    ``str()`` is the whole message for a user; ``reason`` the short cause without the advice
    (what a retrying loop logs after its own "from ADDR").
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class UnreachableError(ClientError):
    """No answer from the server (connection refused or reset, TLS handshake failed...)."""


class RequestTimeout(UnreachableError):
    """The server did not answer in time."""


class ProtocolError(ClientError):
    """The server's answer could not be read as HTTP/1.x."""


class HTTPStatusError(ClientError):
    """The server answered with an error status; ``str()`` is the server's own message."""

    def __init__(self, message: str, status: int, server_text: str = "") -> None:
        lines = server_text.strip().splitlines()
        super().__init__(message, f"HTTP {status}: {lines[0][:200] if lines else ''}".rstrip(": "))
        self.status = status


class NotFoundError(HTTPStatusError):
    """The server answered 404."""


class LoginError(LoomError):
    """An ACL login that failed or was refused (``Error logging in: ...``), or its token that
    could not be checked or written (``loom.api.login``)."""
