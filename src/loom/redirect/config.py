"""What transparent proxy redirects where: one value, ``RedirectConfig``, and its flags.

The injector's planner emits a ``RedirectConfig``; ``loom k8s connect-init`` and ``loom local``
apply it in-process (``applying.apply_redirect``); ``loom connect redirect-traffic`` (VMs)
parses its flags into one. A Kubernetes init container receives it on its command line:
``to_flags`` renders it and ``from_flags`` parses it back, and ``from_flags(to_flags(c)) == c``
for every valid ``c`` (a property test holds them to it). Both directions, and the CLI's
``argparse`` options, come from the one table ``FLAGS``, so a new setting is one row here.

Validation (ports, UIDs, CIDRs) happens once, in ``RedirectConfig.__post_init__``, whoever
builds the value. A bad value is a ``RedirectConfigError`` whose message names the flag, and
which also carries the dataclass field and a flag-free ``why``, so the planner can name the
pod annotation the value came from instead.

Pure: no I/O (``argparse`` is only asked to parse a list of strings; its errors are raised).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from loom.defaults import OUTBOUND_PORT, PUBLIC_LISTENER_PORT
from loom.errors import LoomError

MAX_UID = 2**32 - 2
"""The largest UID the owner match takes: ``(uid_t)-1`` means "no uid" to the kernel."""


class RedirectError(LoomError):
    """Root of the errors of transparent-proxy redirection (``loom.redirect``)."""


class RedirectConfigError(RedirectError):
    """A value that cannot become a rule (bad port, CIDR or UID, unknown flag)."""

    exit_code = 2

    def __init__(self, message: str, field: str | None = None, why: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        """The ``RedirectConfig`` field the bad value was for; None for a flag-syntax error."""
        self.why = why or message
        """What is wrong, quoting the value but naming no flag (for the planner's refusal)."""


@dataclass(frozen=True)
class Flag:
    """One command-line flag of a ``RedirectConfig`` field."""

    name: str
    """The flag, e.g. ``--proxy-uid`` (Consul's spelling)."""
    field: str
    """The ``RedirectConfig`` field it sets."""
    metavar: str
    """``PORT``, ``UID`` or ``CIDR``: the value's kind in ``--help``."""
    help: str
    """One line of ``--help``."""
    repeated: bool = False
    """A tuple field: the flag may be given again, each value comma-separated or not."""


FLAGS = (
    Flag("--proxy-uid", "proxy_uid", "UID", "UID the proxy runs as; its traffic is not redirected"),
    Flag(
        "--proxy-inbound-port",
        "proxy_inbound_port",
        "PORT",
        "the proxy's inbound (public) listener port (default %(default)s)",
    ),
    Flag(
        "--proxy-outbound-port",
        "proxy_outbound_port",
        "PORT",
        "the proxy's outbound listener port (default %(default)s)",
    ),
    Flag(
        "--exclude-inbound-port",
        "exclude_inbound_ports",
        "PORT",
        "inbound port reaching the app directly (repeatable, or comma-separated)",
        repeated=True,
    ),
    Flag(
        "--exclude-outbound-port",
        "exclude_outbound_ports",
        "PORT",
        "outbound port bypassing the proxy (repeatable)",
        repeated=True,
    ),
    Flag(
        "--exclude-outbound-cidr",
        "exclude_outbound_cidrs",
        "CIDR",
        "outbound destination network bypassing the proxy (repeatable)",
        repeated=True,
    ),
    Flag(
        "--exclude-uid",
        "exclude_uids",
        "UID",
        "another UID whose traffic and DNS are not redirected (repeatable)",
        repeated=True,
    ),
    Flag(
        "--dns-port",
        "dns_port",
        "PORT",
        "redirect UDP/TCP 53 to this port on 127.0.0.1 (the DNS proxy)",
    ),
)
"""Every flag, in the order ``to_flags`` renders them."""

FLAG_NAMES = {flag.field: flag.name for flag in FLAGS}
"""``RedirectConfig`` field -> its flag."""


@dataclass(frozen=True)
class RedirectConfig:
    """What to redirect where; mirrors the flags of ``consul connect redirect-traffic``."""

    proxy_uid: int
    """UID the proxy (Envoy, the DNS proxy) runs as; its own traffic is never redirected,
    or it would loop back into itself."""
    proxy_inbound_port: int = PUBLIC_LISTENER_PORT
    """Port of the proxy's public (inbound) listener; Consul's default."""
    proxy_outbound_port: int = OUTBOUND_PORT
    """Port of the proxy's outbound listener (``original_dst``); Consul's default."""
    exclude_inbound_ports: tuple[int, ...] = ()
    """Inbound destination ports that reach the app directly (health checks, metrics)."""
    exclude_outbound_ports: tuple[int, ...] = ()
    """Outbound destination ports that bypass the proxy."""
    exclude_outbound_cidrs: tuple[str, ...] = ()
    """Outbound destination networks that bypass the proxy (IPv4 or IPv6, kept as written;
    each family's rules get the networks of that family)."""
    exclude_uids: tuple[int, ...] = ()
    """Further UIDs whose outbound traffic and DNS queries are not redirected."""
    dns_port: int | None = None
    """Port of the DNS proxy on loopback; UDP and TCP 53 from non-excluded UIDs go there.
    ``None``: DNS is left alone."""

    def __post_init__(self) -> None:
        _check_uid("proxy_uid", self.proxy_uid)
        _check_port("proxy_inbound_port", self.proxy_inbound_port)
        _check_port("proxy_outbound_port", self.proxy_outbound_port)
        if self.proxy_inbound_port == self.proxy_outbound_port:
            why = f"{self.proxy_inbound_port} is both the proxy's inbound and outbound port"
            raise RedirectConfigError(
                f"--proxy-inbound-port and --proxy-outbound-port are both "
                f"{self.proxy_inbound_port}: the proxy needs two listeners",
                "proxy_inbound_port",
                why,
            )
        for port in self.exclude_inbound_ports:
            _check_port("exclude_inbound_ports", port)
        for port in self.exclude_outbound_ports:
            _check_port("exclude_outbound_ports", port)
        for cidr in self.exclude_outbound_cidrs:
            parse_cidr(cidr)
        for uid in self.exclude_uids:
            _check_uid("exclude_uids", uid)
        if self.dns_port is not None:
            _check_port("dns_port", self.dns_port)

    def to_flags(self) -> list[str]:
        """The flags naming this configuration, in a stable order (``--flag=value`` each)."""
        out: list[str] = []
        for flag in FLAGS:
            value = getattr(self, flag.field)
            if flag.repeated:
                out += [f"{flag.name}={item}" for item in value]
            elif value is not None:
                out.append(f"{flag.name}={value}")
        return out

    @classmethod
    def from_flags(cls, argv: Sequence[str]) -> RedirectConfig:
        """The configuration ``argv`` names; ``RedirectConfigError`` for anything else."""
        parser = _RaisingParser(prog="redirect flags", add_help=False, allow_abbrev=False)
        add_arguments(parser)
        return config_from_namespace(parser.parse_args(list(argv)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of ``FLAGS`` on ``parser`` (values kept as text, converted by
    ``config_from_namespace`` so a bad one is a one-line ``RedirectConfigError``)."""
    defaults = {f.name: f.default for f in dataclasses.fields(RedirectConfig)}
    for flag in FLAGS:
        default = defaults[flag.field]
        if flag.repeated:
            parser.add_argument(
                flag.name,
                dest=flag.field,
                metavar=flag.metavar,
                action="append",
                default=[],
                help=flag.help,
            )
        else:
            parser.add_argument(
                flag.name,
                dest=flag.field,
                metavar=flag.metavar,
                default=None if default in (None, dataclasses.MISSING) else str(default),
                help=flag.help,
            )


def config_from_namespace(args: argparse.Namespace) -> RedirectConfig:
    """The validated configuration of flags declared by ``add_arguments``."""
    if args.proxy_uid is None:
        raise RedirectConfigError("--proxy-uid is required: the UID the proxy runs as", "proxy_uid")
    return RedirectConfig(
        proxy_uid=_number("proxy_uid", args.proxy_uid),
        proxy_inbound_port=_number("proxy_inbound_port", args.proxy_inbound_port),
        proxy_outbound_port=_number("proxy_outbound_port", args.proxy_outbound_port),
        exclude_inbound_ports=_numbers("exclude_inbound_ports", args.exclude_inbound_ports),
        exclude_outbound_ports=_numbers("exclude_outbound_ports", args.exclude_outbound_ports),
        exclude_outbound_cidrs=tuple(_split(args.exclude_outbound_cidrs)),
        exclude_uids=_numbers("exclude_uids", args.exclude_uids),
        dns_port=None if args.dns_port is None else _number("dns_port", args.dns_port),
    )


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``10.0.0.0/8``, ``10.1.2.3`` (one address) or an IPv6 network; host bits are dropped."""
    try:
        if not isinstance(text, str):
            raise TypeError(f"{type(text).__name__}, not text")
        return ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError) as exc:
        raise RedirectConfigError(
            f"--exclude-outbound-cidr {text!r}: not an IPv4/IPv6 address or CIDR ({exc})",
            "exclude_outbound_cidrs",
            f"{text!r} is not an IP address or CIDR",
        ) from exc


class _RaisingParser(argparse.ArgumentParser):
    """``argparse`` that raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise RedirectConfigError(f"redirect flags: {message}")


def _check_port(field: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise RedirectConfigError(
            f"{FLAG_NAMES[field]} {port!r}: a port is a number from 1 to 65535",
            field,
            f"{port!r} is not a port number (1-65535)",
        )


def _check_uid(field: str, uid: int) -> None:
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid <= MAX_UID:
        raise RedirectConfigError(
            f"{FLAG_NAMES[field]} {uid!r}: a UID is a number from 0 to {MAX_UID}",
            field,
            f"{uid!r} is not a user ID (0-{MAX_UID})",
        )


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _number(field: str, text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError as exc:
        raise RedirectConfigError(
            f"{FLAG_NAMES[field]} {text!r}: not a number", field, f"{text!r} is not a number"
        ) from exc


def _numbers(field: str, values: list[str]) -> tuple[int, ...]:
    return tuple(_number(field, part) for part in _split(values))
