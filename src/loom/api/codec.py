"""HTTP/1.1 as bytes: the request the client writes, the response it reads.

Pure (no sockets, no asyncio) so each framing rule is unit-tested on byte strings, as
dnspython keeps ``dns.message`` apart from ``dns.query``. The transport feeds what it reads
into ``ResponseParser`` until ``done``, and tells it when the peer closed.

Framing follows RFC 9112 section 6.3, the parts a client of one server needs: no body for
``HEAD``, 1xx, 204 and 304; ``Transfer-Encoding: chunked`` (trailers read and dropped);
``Content-Length``; otherwise the body runs until the server closes. aiohttp's server sends
``Content-Length`` for ``web.Response`` and chunked for a ``StreamResponse`` without a
length; both, and close-delimited bodies, are handled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from loom.api.errors import ProtocolError

MAX_HEAD_BYTES = 64 * 1024
"""Longest status line plus headers accepted (aiohttp's server limit is 8 KiB per line)."""


@dataclass(frozen=True)
class Request:
    """One request as the client means it."""

    method: str
    target: str
    """Path and query, already encoded (``/v1/catalog/services?ns=x``)."""
    host: str
    """The ``Host`` header: ``HOST:PORT``, or ``localhost`` over a unix socket."""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """One response as read: header names are lowercase, values as sent."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


def encode_request(request: Request) -> bytes:
    """The request's bytes: one connection per request, so ``Connection: close``."""
    lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {request.host}"]
    given = {name.lower() for name in request.headers}
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    if "connection" not in given:
        lines.append("Connection: close")
    if "content-length" not in given and (request.body or request.method in ("PUT", "POST")):
        lines.append(f"Content-Length: {len(request.body)}")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ProtocolError(f"a request header contains a line break: {line[:80]!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


class ResponseParser:
    """Incremental reader of one response: ``feed`` bytes, ``feed_eof`` at close, ``result``."""

    def __init__(self, method: str = "GET") -> None:
        self._method = method
        self._buf = bytearray()
        self._status = 0
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._state = "head"  # head -> length | chunk-size | chunk-data | trailer | close -> done
        self._left = 0

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> None:
        """Take more bytes from the connection; ``ProtocolError`` if they are not HTTP."""
        self._buf += data
        while not self.done and self._step():
            pass

    def feed_eof(self) -> None:
        """The server closed the connection: fine for close-delimited bodies, else an error."""
        if self._state == "close":
            self._body += self._buf
            self._buf.clear()
            self._state = "done"
        elif not self.done:
            where = "headers" if self._state == "head" else "body"
            raise ProtocolError(f"the server closed the connection in the middle of the {where}")

    def result(self) -> Response:
        assert self.done, "result() before the response was complete"
        return Response(self._status, self._reason, dict(self._headers), bytes(self._body))

    # -- states: each returns True when it made progress and may be called again ----------

    def _step(self) -> bool:
        if self._state == "head":
            return self._head()
        if self._state == "length":
            take = min(self._left, len(self._buf))
            self._body += self._buf[:take]
            del self._buf[:take]
            self._left -= take
            if self._left == 0:
                self._state = "done"
            return take > 0 or self.done
        if self._state == "chunk-size":
            return self._chunk_size()
        if self._state == "chunk-data":
            return self._chunk_data()
        if self._state == "trailer":
            return self._trailer()
        return False  # "close": everything waits for feed_eof

    def _line(self) -> bytes | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise ProtocolError(f"a line of the response is longer than {MAX_HEAD_BYTES} bytes")
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise ProtocolError(f"the response headers are longer than {MAX_HEAD_BYTES} bytes")
            return False
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        status_line, *header_lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not _is_number(code) or len(code) != 3:
            raise ProtocolError(f"not an HTTP/1.x response: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"malformed response header: {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        status = int(code)
        if 100 <= status < 200:
            return True  # an interim answer (100 Continue): the real one follows
        self._status, self._reason, self._headers = status, reason, headers
        self._state = self._framing(status, headers)
        return True

    def _framing(self, status: int, headers: Mapping[str, str]) -> str:
        if self._method == "HEAD" or status in (204, 304):
            return "done"
        encodings = [e.strip().lower() for e in headers.get("transfer-encoding", "").split(",")]
        if encodings[-1] == "chunked":
            return "chunk-size"
        if encodings != [""]:
            return "close"  # another transfer coding: the body ends at close (RFC 9112 6.3)
        length = headers.get("content-length")
        if length is None:
            return "close"
        if not _is_number(length):
            raise ProtocolError(f"bad Content-Length {length[:40]!r}")
        self._left = int(length)
        return "length" if self._left else "done"

    def _chunk_size(self) -> bool:
        line = self._line()
        if line is None:
            return False
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise ProtocolError(f"bad chunk size {size_text[:20]!r}")
        self._left = size
        self._state = "chunk-data" if size else "trailer"
        return True

    def _chunk_data(self) -> bool:
        if self._left:
            take = min(self._left, len(self._buf))
            self._body += self._buf[:take]
            del self._buf[:take]
            self._left -= take
            if self._left:
                return False
        if len(self._buf) < 2:
            return False
        if self._buf[:2] != b"\r\n":
            raise ProtocolError("a chunk is not followed by CRLF")
        del self._buf[:2]
        self._state = "chunk-size"
        return True

    def _trailer(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if not line:
            self._state = "done"
        return True


def _is_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``²``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()
