"""Parsing of listen/connect addresses used across commands: ``HOST:PORT`` or ``unix:PATH``."""

from __future__ import annotations

from dataclasses import dataclass

from loom.errors import LoomError


class AddressError(LoomError):
    """An address flag that is neither HOST:PORT nor unix:PATH."""


@dataclass(frozen=True)
class Address:
    host: str = ""
    port: int = 0
    path: str = ""  # set for unix sockets

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, scheme: str = "http") -> str:
        """Base URL for TCP addresses (for unix sockets the host part is a placeholder)."""
        if self.path:
            return f"{scheme}://localhost"
        return f"{scheme}://{self}"


def parse_address(text: str, what: str = "address") -> Address:
    raw = text.strip()
    for scheme in ("http://", "https://"):
        if raw.startswith(scheme):
            raw = raw[len(scheme) :].rstrip("/")
    if raw.startswith("unix:"):
        path = raw[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise AddressError(f"{what}: {text!r} has an empty socket path")
        return Address(path=path)
    if raw.startswith("/"):
        return Address(path=raw)
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise AddressError(f"{what}: {text!r} is not HOST:PORT or unix:PATH")
    host = host.strip("[]") or "0.0.0.0"
    return Address(host=host, port=int(port))
