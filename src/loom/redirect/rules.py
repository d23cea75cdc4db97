"""The nat rules of transparent proxy, built from a ``RedirectConfig`` as a pure value.

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

from dataclasses import dataclass

from loom.redirect.config import RedirectConfig, parse_cidr

INBOUND_CHAIN = "CONSUL_PROXY_INBOUND"
IN_REDIRECT_CHAIN = "CONSUL_PROXY_IN_REDIRECT"
OUTPUT_CHAIN = "CONSUL_PROXY_OUTPUT"
REDIRECT_CHAIN = "CONSUL_PROXY_REDIRECT"
DNS_CHAIN = "CONSUL_DNS_REDIRECT"

#: Every chain we own, in the order they are declared. All are always declared (the DNS chain
#: stays empty without a DNS port) so a re-apply flushes whatever an earlier apply left there.
CHAINS = (INBOUND_CHAIN, IN_REDIRECT_CHAIN, OUTPUT_CHAIN, REDIRECT_CHAIN, DNS_CHAIN)

_LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}


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
