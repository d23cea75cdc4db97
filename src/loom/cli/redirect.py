"""``loom connect redirect-traffic``: flags -> ``RedirectConfig`` -> print or apply.

Flag values are taken as text and converted here, so a bad port or CIDR is one ``loom: ...``
line (a ``RedirectConfigError``) rather than argparse's usage dump.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from loom.redirect import RedirectConfig, RedirectConfigError, apply_redirect, redirect_rules

if TYPE_CHECKING:
    from loom.cli import Commands

_DESCRIPTION = """\
Install the nat rules of transparent proxy in this network namespace (or --netns NAME):
inbound TCP goes to the proxy's inbound port, outbound TCP to its outbound port, and with
--dns-port UDP and TCP port 53 to the DNS proxy on 127.0.0.1. The proxy's UID (and any
--exclude-uid) is never redirected. Applied atomically with iptables-restore --noflush;
running it again with the same flags changes nothing. IPv6: when an interface other than lo
has an IPv6 address, the same rules are mirrored with ip6tables so IPv6 cannot bypass the
proxy (loom local pods have IPv6 disabled instead). Needs root; --print needs nothing."""


def register(commands: Commands) -> None:
    connect = commands.group("connect", "Service mesh connectivity helpers (Consul's `connect`).")
    parser = connect.add_parser(
        "redirect-traffic",
        help="Install transparent-proxy iptables rules (like consul connect redirect-traffic).",
        description=_DESCRIPTION,
    )
    add = parser.add_argument
    add("--proxy-uid", metavar="UID", help="UID the proxy runs as; its traffic is not redirected")
    add(
        "--proxy-inbound-port",
        metavar="PORT",
        default="20000",
        help="the proxy's inbound (public) listener port (default 20000)",
    )
    add(
        "--proxy-outbound-port",
        metavar="PORT",
        default="15001",
        help="the proxy's outbound listener port (default 15001)",
    )
    add(
        "--exclude-inbound-port",
        metavar="PORT",
        action="append",
        default=[],
        help="inbound port reaching the app directly (repeatable, or comma-separated)",
    )
    add(
        "--exclude-outbound-port",
        metavar="PORT",
        action="append",
        default=[],
        help="outbound port bypassing the proxy (repeatable)",
    )
    add(
        "--exclude-outbound-cidr",
        metavar="CIDR",
        action="append",
        default=[],
        help="outbound destination network bypassing the proxy (repeatable)",
    )
    add(
        "--exclude-uid",
        metavar="UID",
        action="append",
        default=[],
        help="another UID whose traffic and DNS are not redirected (repeatable)",
    )
    add(
        "--dns-port",
        metavar="PORT",
        help="redirect UDP/TCP 53 to this port on 127.0.0.1 (the DNS proxy)",
    )
    add("--netns", metavar="NAME", help="apply in this named network namespace (ip netns)")
    add(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the iptables-restore input (IPv4, then IPv6) instead of applying it",
    )
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> RedirectConfig:
    """The validated configuration named by the flags."""
    if args.proxy_uid is None:
        raise RedirectConfigError("--proxy-uid is required: the UID the proxy runs as")
    return RedirectConfig(
        proxy_uid=_number("--proxy-uid", args.proxy_uid),
        proxy_inbound_port=_number("--proxy-inbound-port", args.proxy_inbound_port),
        proxy_outbound_port=_number("--proxy-outbound-port", args.proxy_outbound_port),
        exclude_inbound_ports=_numbers("--exclude-inbound-port", args.exclude_inbound_port),
        exclude_outbound_ports=_numbers("--exclude-outbound-port", args.exclude_outbound_port),
        exclude_outbound_cidrs=tuple(_split(args.exclude_outbound_cidr)),
        exclude_uids=_numbers("--exclude-uid", args.exclude_uid),
        dns_port=None if args.dns_port is None else _number("--dns-port", args.dns_port),
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.print_only:
        print("# IPv4: iptables-restore --noflush")
        print(redirect_rules(config, 4).render(), end="")
        print("# IPv6: ip6tables-restore --noflush (applied only when IPv6 is up)")
        print(redirect_rules(config, 6).render(), end="")
        return 0
    result = apply_redirect(config, netns=args.netns)
    print(result.summary())
    return 0


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _number(flag: str, text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError as exc:
        raise RedirectConfigError(f"{flag} {text!r}: not a number") from exc


def _numbers(flag: str, values: list[str]) -> tuple[int, ...]:
    return tuple(_number(flag, part) for part in _split(values))
