"""The pod's resolv.conf: where to forward (nameservers) and what auto-path strips (search).

glibc's reading of the file is the reference: ``nameserver`` lines in order (glibc uses the
first three), the last ``search`` or ``domain`` line wins, ``options ndots:N``. Upstream
addresses given as ``ADDR[:PORT]`` (``--upstream``) go through ``parse_address`` too.

``parse_resolv_conf`` is pure; ``read_resolv_conf`` is the one function here that does I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from loom import addrs
from loom.dns.errors import DnsError, ResolvConfError

MAX_NAMESERVERS = 3
"""glibc's MAXNS: later nameserver lines are ignored, by glibc and by us."""


@dataclass(frozen=True)
class ResolvConf:
    """What the proxy takes from a resolv.conf."""

    nameservers: tuple[str, ...] = ()
    """Upstream resolver addresses (IPv4 or IPv6 text), in order."""
    search: tuple[str, ...] = ()
    """Search domains, lowercase, no trailing dots, in order."""
    ndots: int = 1
    """glibc's ndots (informational: the proxy answers whatever the client asks)."""


def parse_resolv_conf(text: str) -> ResolvConf:
    """Parse resolv.conf text; unknown lines and bad addresses are skipped, as glibc does."""
    nameservers: list[str] = []
    search: tuple[str, ...] = ()
    ndots = 1
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(line) < 2:
            continue
        keyword, args = line[0], line[1:]
        if keyword == "nameserver" and len(nameservers) < MAX_NAMESERVERS:
            try:
                nameservers.append(str(ipaddress.ip_address(args[0].split("%", 1)[0])))
            except ValueError:
                continue
        elif keyword in ("search", "domain"):
            search = tuple(d.lower().rstrip(".") for d in args if d.strip("."))
        elif keyword == "options":
            for opt in args:
                if opt.startswith("ndots:") and opt[6:].isdigit():
                    ndots = min(int(opt[6:]), 15)
    return ResolvConf(tuple(nameservers), search, ndots)


def read_resolv_conf(path: str) -> ResolvConf:
    """Read and parse ``path``; ResolvConfError when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ResolvConfError(f"cannot read resolv.conf {path}: {exc.strerror}") from exc
    return parse_resolv_conf(text)


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[V6]:PORT`` or a bare IPv6 address -> (address, port).

    The forms are ``loom.addrs``'s; an upstream must also be an IP address (no names: the
    proxy cannot resolve its own resolver).
    """
    try:
        addr = addrs.parse_address(text, "--upstream", default_port, unix=False)
    except addrs.AddressError as exc:
        raise DnsError(f"bad address {text!r}: {exc.reason}") from None
    try:
        ipaddress.ip_address(addr.host)
    except ValueError:
        raise DnsError(f"bad address {text!r}: {addr.host!r} is not an IP address") from None
    return addr.host, addr.port
