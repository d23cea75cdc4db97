"""The one parser of addresses given on command lines, in env vars and in files.

Every flag that names a place to listen on or connect to (``--http-addr``, ``--grpc-addr``,
``--listen``, ``--upstream``, Envoy's admin address file, ``LOOM_HTTP_ADDR``) is read here, so
all of them accept the same forms and refuse bad ones with the same one-line message:

- ``HOST:PORT``, ``[V6]:PORT`` and ``:PORT`` (all interfaces, for listeners);
- ``HOST``, ``[V6]`` or a bare IPv6 address when the caller gives a default port;
- ``unix:PATH`` (also ``unix://PATH``) or an absolute ``/PATH`` for unix sockets;
- ``http://...`` and ``https://...`` (the scheme is kept: ``https`` means TLS); without a
  port they take the caller's default, else 80 / 443.

Pure: no I/O, no name resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

from loom.errors import LoomError

_SCHEME_PORTS = {"http": 80, "https": 443}


class AddressError(LoomError):
    """An address that is none of the accepted forms; ``reason`` says what is wrong with it."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Address:
    """A TCP endpoint (``host``, ``port``) or a unix socket (``path``)."""

    host: str = ""
    """IP address or name, IPv6 without brackets; empty for unix sockets."""
    port: int = 0
    """TCP port; 0 for unix sockets (or "pick a free one" for listeners)."""
    path: str = ""
    """The socket's path for unix sockets, else empty."""
    scheme: str = ""
    """``http`` or ``https`` when the text had one (``https``: speak TLS), else empty."""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @property
    def tls(self) -> bool:
        """True for ``https://`` addresses."""
        return self.scheme == "https"

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, scheme: str | None = None) -> str:
        """Base URL (for unix sockets the host part is a placeholder)."""
        scheme = scheme or self.scheme or "http"
        if self.path:
            return f"{scheme}://localhost"
        return f"{scheme}://{self}"


def parse_address(
    text: str, what: str = "address", default_port: int | None = None, unix: bool = True
) -> Address:
    """``text`` as an ``Address``; ``AddressError`` naming ``what`` when it is not one.

    ``default_port`` is used when the text has no port (without one a port is required);
    ``unix=False`` refuses unix sockets (UDP listeners, upstream resolvers).
    """
    try:
        return _parse(text, default_port, unix)
    except AddressError as exc:
        raise AddressError(f"{what}: {text!r} {exc.reason}", exc.reason) from None


def _parse(text: str, default_port: int | None, unix: bool) -> Address:
    raw = text.strip()
    scheme = ""
    for name in _SCHEME_PORTS:
        if raw.lower().startswith(f"{name}://"):
            scheme, raw = name, raw[len(name) + 3 :].rstrip("/")
            if default_port is None:
                default_port = _SCHEME_PORTS[name]
    if raw.startswith(("unix:", "/")):
        if not unix:
            raise AddressError("", "is a unix socket; expected HOST:PORT")
        path = raw[5:] if raw.startswith("unix:") else raw
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise AddressError("", "has an empty socket path")
        return Address(path=path, scheme=scheme)
    host, port_text = _split(raw)
    if port_text is None:
        if default_port is None:
            raise AddressError("", "is not HOST:PORT or unix:PATH")
        port = default_port
    elif not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise AddressError("", "has no valid port (expected HOST:PORT, port 0-65535)")
    else:
        port = int(port_text)
    return Address(host=host or "0.0.0.0", port=port, scheme=scheme)


def _split(raw: str) -> tuple[str, str | None]:
    """(host, port text or None): ``[V6]:P``, ``[V6]``, bare V6, ``H:P``, ``H``."""
    if raw.startswith("["):
        inner, closed, rest = raw[1:].partition("]")
        if not closed or not inner:
            raise AddressError("", "has an unclosed or empty [IPv6] part")
        if not rest:
            return inner, None
        if not rest.startswith(":"):
            raise AddressError("", "expected [IPV6]:PORT")
        return inner, rest[1:]
    if raw.count(":") > 1:
        return raw, None  # a bare IPv6 address: brackets are needed to give it a port
    host, sep, port = raw.partition(":")
    return host, (port if sep else None)
