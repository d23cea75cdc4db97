"""``loom connect redirect-traffic`` (VMs): flags -> ``RedirectConfig`` -> print or apply.

A thin front: the flags, their conversion and validation are ``loom.redirect.config``'s (the
same ones an injected init container's arguments are parsed with), so a bad port or CIDR is
one ``loom: ...`` line (a ``RedirectConfigError``) rather than argparse's usage dump. This
command only adds where to apply (``--netns``), ``--print``, and ``--proxy-id`` (Consul's:
the ports come from the proxy's registration on the server).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from loom.cli.api import _addr, _client
from loom.defaults import OUTBOUND_PORT, PUBLIC_LISTENER_PORT
from loom.redirect.config import RedirectConfigError, add_arguments

_PORTS = {"proxy_inbound_port": PUBLIC_LISTENER_PORT, "proxy_outbound_port": OUTBOUND_PORT}
"""The port flags ``--proxy-id`` may fill, and their defaults when it does not."""

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
    add_arguments(parser)
    add = parser.add_argument
    add("--netns", metavar="NAME", help="apply in this named network namespace (ip netns)")
    add(
        "--proxy-id",
        metavar="ID",
        help="take the proxy's inbound and outbound ports from its registration on the server "
        "(Consul's -proxy-id; the port flags, when given, still win)",
    )
    _addr(parser)
    for action in parser._actions:  # None: not given, so --proxy-id's registration may fill it
        if action.dest in _PORTS:
            action.help = f"{str(action.help).split(' (default')[0]} (default {action.default}, or "
            action.help += "the registration's with --proxy-id)"
            action.default = None
    add(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the iptables-restore input (IPv4, then IPv6) instead of applying it",
    )
    parser.set_defaults(func=run)


def _ports_of(args: argparse.Namespace) -> None:
    """Fill the port flags not given: from the proxy's registration with --proxy-id, else
    ``RedirectConfig``'s defaults."""
    found: dict[str, object] = {}
    if args.proxy_id:
        reg = _client(args).get(f"/v1/agent/service/{args.proxy_id}")
        if not isinstance(reg, dict) or reg.get("Kind") != "connect-proxy":
            raise RedirectConfigError(
                f"--proxy-id {args.proxy_id}: service is not a connect-proxy", "proxy_id"
            )
        tproxy = (reg.get("Proxy") or {}).get("TransparentProxy") or {}
        found = {"proxy_inbound_port": reg.get("Port") or None,
                 "proxy_outbound_port": tproxy.get("OutboundListenerPort") or None}  # fmt: skip
    for dest, default in _PORTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, str(found.get(dest) or default))


def run(args: argparse.Namespace) -> int:
    from loom.redirect import config_from_namespace, redirect_rules
    from loom.redirect.applying import apply_redirect

    _ports_of(args)
    config = config_from_namespace(args)
    if args.print_only:
        print("# IPv4: iptables-restore --noflush")
        print(redirect_rules(config, 4).render(), end="")
        print("# IPv6: ip6tables-restore --noflush (applied only when IPv6 is up)")
        print(redirect_rules(config, 6).render(), end="")
        return 0
    result = apply_redirect(config, netns=args.netns)
    print(result.summary())
    return 0
