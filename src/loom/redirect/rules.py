"""The nat rules of transparent proxy, built from flags as a pure, deterministic value.

``redirect_rules(config, family)`` turns a ``RedirectConfig`` into a ``RuleSet``: the chains
Consul names (so operators' knowledge carries over), the rules inside them, and the few jumps
from the built-in ``PREROUTING``/``OUTPUT`` chains that send traffic into them. The rule set
renders to ``iptables-restore`` input. Nothing here touches the system: ``applying.py`` checks
which jumps already exist and feeds the text to ``iptables-restore --noflush``.

Traffic paths, in the order the rules decide them:

* inbound TCP (``PREROUTING``) -> ``CONSUL_PROXY_INBOUND``: excluded inbound ports return,
  everything else -> ``CONSUL_PROXY_IN_REDIRECT`` -> the proxy's inbound port;
* DNS (UDP 53 from ``OUTPUT``, TCP 53 as the first rule of ``CONSUL_PROXY_OUTPUT``) ->
  ``CONSUL_DNS_REDIRECT``: the proxy's and excluded UIDs return (the DNS proxy's own upstream
  queries), everything else -> the DNS port on loopback;
* outbound TCP (``OUTPUT``) -> ``CONSUL_PROXY_OUTPUT``: the proxy UID and excluded UIDs return,
  loopback destinations return, anything routed over ``lo`` returns (the pod's own addresses:
  an app dialing its own pod IP reaches itself), excluded ports and CIDRs return, everything
  else -> ``CONSUL_PROXY_REDIRECT`` -> the proxy's outbound port.

TCP DNS enters its chain from inside ``CONSUL_PROXY_OUTPUT`` rather than from ``OUTPUT`` so the
built-in chain only ever holds jumps for disjoint traffic (UDP 53, TCP) and their order there
never matters: re-applying with or without ``--dns-port`` cannot leave them in a bad order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from loom.errors import LoomError

INBOUND_CHAIN = "CONSUL_PROXY_INBOUND"
IN_REDIRECT_CHAIN = "CONSUL_PROXY_IN_REDIRECT"
OUTPUT_CHAIN = "CONSUL_PROXY_OUTPUT"
REDIRECT_CHAIN = "CONSUL_PROXY_REDIRECT"
DNS_CHAIN = "CONSUL_DNS_REDIRECT"

#: Every chain we own, in the order they are declared. All are always declared (the DNS chain
#: stays empty without a DNS port) so a re-apply flushes whatever an earlier apply left there.
CHAINS = (INBOUND_CHAIN, IN_REDIRECT_CHAIN, OUTPUT_CHAIN, REDIRECT_CHAIN, DNS_CHAIN)

_LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}
_MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid" to the kernel


class RedirectError(LoomError):
    """Root of the errors of ``loom connect redirect-traffic``."""


class RedirectConfigError(RedirectError):
    """A flag value that cannot become a rule (bad port, CIDR or UID)."""

    exit_code = 2


@dataclass(frozen=True)
class RedirectConfig:
    """What to redirect where; mirrors the flags of ``consul connect redirect-traffic``."""

    proxy_uid: int
    """UID the proxy (Envoy, the DNS proxy) runs as; its own traffic is never redirected,
    or it would loop back into itself."""
    proxy_inbound_port: int = 20000
    """Port of the proxy's public (inbound) listener; Consul's default."""
    proxy_outbound_port: int = 15001
    """Port of the proxy's outbound listener (``original_dst``); Consul's default."""
    exclude_inbound_ports: tuple[int, ...] = ()
    """Inbound destination ports that reach the app directly (health checks, metrics)."""
    exclude_outbound_ports: tuple[int, ...] = ()
    """Outbound destination ports that bypass the proxy."""
    exclude_outbound_cidrs: tuple[str, ...] = ()
    """Outbound destination networks that bypass the proxy (IPv4 or IPv6; each family's rules
    get the networks of that family)."""
    exclude_uids: tuple[int, ...] = ()
    """Further UIDs whose outbound traffic and DNS queries are not redirected."""
    dns_port: int | None = None
    """Port of the DNS proxy on loopback; UDP and TCP 53 from non-excluded UIDs go there.
    ``None``: DNS is left alone."""

    def __post_init__(self) -> None:
        _check_uid("--proxy-uid", self.proxy_uid)
        _check_port("--proxy-inbound-port", self.proxy_inbound_port)
        _check_port("--proxy-outbound-port", self.proxy_outbound_port)
        if self.proxy_inbound_port == self.proxy_outbound_port:
            raise RedirectConfigError(
                f"--proxy-inbound-port and --proxy-outbound-port are both "
                f"{self.proxy_inbound_port}: the proxy needs two listeners"
            )
        for port in self.exclude_inbound_ports:
            _check_port("--exclude-inbound-port", port)
        for port in self.exclude_outbound_ports:
            _check_port("--exclude-outbound-port", port)
        for cidr in self.exclude_outbound_cidrs:
            parse_cidr(cidr)
        for uid in self.exclude_uids:
            _check_uid("--exclude-uid", uid)
        if self.dns_port is not None:
            _check_port("--dns-port", self.dns_port)


def _check_port(flag: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise RedirectConfigError(f"{flag} {port!r}: a port is a number from 1 to 65535")


def _check_uid(flag: str, uid: int) -> None:
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid <= _MAX_UID:
        raise RedirectConfigError(f"{flag} {uid!r}: a UID is a number from 0 to {_MAX_UID}")


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``10.0.0.0/8``, ``10.1.2.3`` (one address) or an IPv6 network; host bits are dropped."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise RedirectConfigError(
            f"--exclude-outbound-cidr {text!r}: not an IPv4/IPv6 address or CIDR ({exc})"
        ) from exc


@dataclass(frozen=True, order=True)
class Jump:
    """A rule in a built-in chain that sends traffic into one of our chains."""

    chain: str
    """The built-in chain (``PREROUTING`` or ``OUTPUT``)."""
    spec: tuple[str, ...]
    """The rule after ``-A CHAIN``, exactly as ``iptables -C`` and ``-D`` want it."""

    def line(self, op: str = "-A") -> str:
        return " ".join((op, self.chain, *self.spec))


JUMP_INBOUND = Jump("PREROUTING", ("-p", "tcp", "-j", INBOUND_CHAIN))
JUMP_OUTPUT = Jump("OUTPUT", ("-p", "tcp", "-j", OUTPUT_CHAIN))
JUMP_DNS_UDP = Jump("OUTPUT", ("-p", "udp", "-m", "udp", "--dport", "53", "-j", DNS_CHAIN))

#: Every jump any configuration may install; an apply removes those its config does not want.
ALL_JUMPS = (JUMP_INBOUND, JUMP_OUTPUT, JUMP_DNS_UDP)


@dataclass(frozen=True)
class RuleSet:
    """The nat rules for one address family, ready to render as ``iptables-restore`` input."""

    family: int
    """4 (``iptables``) or 6 (``ip6tables``)."""
    chains: tuple[str, ...]
    """Chains declared (and so flushed) by the restore input."""
    rules: tuple[tuple[str, ...], ...]
    """Rules appended to our chains, each the words after ``-A``."""
    jumps: tuple[Jump, ...]
    """Jumps from built-in chains this configuration needs."""

    @property
    def command(self) -> str:
        """The restore tool for this family."""
        return "iptables-restore" if self.family == 4 else "ip6tables-restore"

    def restore_input(
        self, present: frozenset[Jump] = frozenset(), stale: tuple[Jump, ...] = ()
    ) -> str:
        """Restore input for ``--noflush``: our chains redeclared (so flushed) and refilled,
        wanted jumps appended unless already ``present``, ``stale`` jumps deleted."""
        lines = ["*nat"]
        lines += [f":{chain} - [0:0]" for chain in self.chains]
        lines += [" ".join(("-A", *rule)) for rule in self.rules]
        lines += [jump.line("-D") for jump in stale]
        lines += [jump.line("-A") for jump in self.jumps if jump not in present]
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"

    def render(self) -> str:
        """The full rule set as a fresh namespace receives it (``--print``, golden files)."""
        return self.restore_input()


def redirect_rules(config: RedirectConfig, family: int = 4) -> RuleSet:
    """The transparent-proxy nat rules of ``config`` for IPv4 (``family=4``) or IPv6."""
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    excluded_uids = sorted({config.proxy_uid, *config.exclude_uids} - {config.proxy_uid})
    uids = [config.proxy_uid, *excluded_uids]
    rules: list[tuple[str, ...]] = []

    rules.append(
        (
            REDIRECT_CHAIN,
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            str(config.proxy_outbound_port),
        )
    )
    rules.append(
        (
            IN_REDIRECT_CHAIN,
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            str(config.proxy_inbound_port),
        )
    )

    for port in sorted(set(config.exclude_inbound_ports)):
        rules.append(
            (INBOUND_CHAIN, "-p", "tcp", "-m", "tcp", "--dport", str(port), "-j", "RETURN")
        )
    rules.append((INBOUND_CHAIN, "-p", "tcp", "-j", IN_REDIRECT_CHAIN))

    jumps = [JUMP_INBOUND]
    if config.dns_port is not None:
        for uid in uids:
            rules.append((DNS_CHAIN, "-m", "owner", "--uid-owner", str(uid), "-j", "RETURN"))
        for proto in ("udp", "tcp"):
            rules.append(
                (
                    DNS_CHAIN,
                    "-p",
                    proto,
                    "-m",
                    proto,
                    "--dport",
                    "53",
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    str(config.dns_port),
                )
            )
        rules.append((OUTPUT_CHAIN, "-p", "tcp", "-m", "tcp", "--dport", "53", "-j", DNS_CHAIN))
        jumps.append(JUMP_DNS_UDP)
    jumps.append(JUMP_OUTPUT)

    for uid in uids:
        rules.append((OUTPUT_CHAIN, "-m", "owner", "--uid-owner", str(uid), "-j", "RETURN"))
    rules.append((OUTPUT_CHAIN, "-d", _LOOPBACK[family], "-j", "RETURN"))
    rules.append((OUTPUT_CHAIN, "-o", "lo", "-j", "RETURN"))
    for port in sorted(set(config.exclude_outbound_ports)):
        rules.append((OUTPUT_CHAIN, "-p", "tcp", "-m", "tcp", "--dport", str(port), "-j", "RETURN"))
    networks = {parse_cidr(cidr) for cidr in config.exclude_outbound_cidrs}
    for net in sorted(n for n in networks if n.version == family):
        rules.append((OUTPUT_CHAIN, "-d", str(net), "-j", "RETURN"))
    rules.append((OUTPUT_CHAIN, "-j", REDIRECT_CHAIN))

    return RuleSet(family=family, chains=CHAINS, rules=tuple(rules), jumps=tuple(jumps))
