"""Installs a transparent-proxy rule set in a network namespace, atomically and idempotently.

The rule builder (``rules.py``) is pure; this module is the only place that runs
``iptables``. One apply is one ``iptables-restore --noflush`` transaction per address family:
our chains are redeclared in the input (which flushes and refills them), and the jumps from the
built-in chains are appended only when ``iptables -C`` says they are missing (and deleted when a
previous apply installed one this configuration no longer wants). Applying the same
configuration twice therefore leaves ``iptables -t nat -S`` exactly as after the first apply,
and a failing restore changes nothing.

IPv6: the rules are mirrored with ``ip6tables`` whenever an interface other than ``lo`` has an
IPv6 address in the namespace, so IPv6 traffic is sent to the proxy's ports too (and fails
there rather than bypassing the mesh if the proxy only listens on IPv4). Without such an
address nothing can leave over IPv6 and only IPv4 rules are installed; ``loom local`` pods
have IPv6 disabled. IPv6 up without ``ip6tables-restore`` is an error, not a silent bypass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loom.redirect.config import RedirectConfig, RedirectError
from loom.redirect.rules import ALL_JUMPS, RuleSet, redirect_rules

_TIMEOUT_S = 30.0
_IF_INET6 = Path("/proc/net/if_inet6")


class RedirectApplyError(RedirectError):
    """The rules could not be installed (not root, tool missing, iptables refused them)."""


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did, for the one-line summary of the CLI."""

    families: tuple[int, ...]
    """Address families whose rules were installed (4, and 6 when IPv6 is up)."""
    netns: str | None
    """Named network namespace the rules went into; ``None`` for the current one."""

    def summary(self) -> str:
        where = f"network namespace {self.netns}" if self.netns else "this network namespace"
        if self.families == (4,):
            return f"redirect rules installed in {where} (IPv4; IPv6 has no address here)"
        return f"redirect rules installed in {where} (IPv4 and IPv6)"


def apply_redirect(config: RedirectConfig, netns: str | None = None) -> ApplyResult:
    """Install the rules of ``config`` in ``netns`` (a name under /run/netns) or here."""
    if os.geteuid() != 0:
        raise RedirectApplyError(
            "redirect-traffic needs root to change iptables rules "
            "(use --print to see the rules without applying them)"
        )
    prefix = _netns_prefix(netns)
    families = [4]
    if ipv6_is_up(netns):
        families.append(6)
    for family in families:
        ruleset = redirect_rules(config, family)
        _require_tool(ruleset.command, family)
        apply_ruleset(ruleset, prefix)
    return ApplyResult(families=tuple(families), netns=netns)


def apply_ruleset(ruleset: RuleSet, prefix: Sequence[str] = ()) -> None:
    """One ``*-restore --noflush`` transaction: chains refilled, jumps added if missing."""
    tool = "iptables" if ruleset.family == 4 else "ip6tables"
    present = frozenset(jump for jump in ALL_JUMPS if _has_rule(prefix, tool, jump.line("-C")))
    stale = tuple(jump for jump in ALL_JUMPS if jump in present and jump not in ruleset.jumps)
    text = ruleset.restore_input(present=present, stale=stale)
    done = _run([*prefix, ruleset.command, "--noflush"], text)
    if done.returncode != 0:
        raise RedirectApplyError(f"{ruleset.command} failed: {_first_line(done.stderr)}")


def ipv6_is_up(netns: str | None = None) -> bool:
    """Whether an interface other than ``lo`` has an IPv6 address in the namespace."""
    if netns is None:
        try:
            text = _IF_INET6.read_text()
        except FileNotFoundError:  # IPv6 compiled out or disabled at boot
            return False
    else:
        done = _run([*_netns_prefix(netns), "cat", str(_IF_INET6)])
        if done.returncode != 0:
            return False
        text = done.stdout
    return any(line.split()[-1] != "lo" for line in text.splitlines() if line.split())


def saved_rules(family: int = 4, netns: str | None = None) -> str:
    """``iptables-save -t nat`` of the namespace without its volatile comment lines."""
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    _require_tool(tool, family)
    done = _run([*_netns_prefix(netns), tool, "-t", "nat"])
    if done.returncode != 0:
        raise RedirectApplyError(f"{tool} failed: {_first_line(done.stderr)}")
    return "".join(line for line in done.stdout.splitlines(True) if not line.startswith("#"))


def _netns_prefix(netns: str | None) -> list[str]:
    if netns is None:
        return []
    if shutil.which("ip") is None:
        raise RedirectApplyError("--netns needs the ip command (Debian: apt-get install iproute2)")
    if "/" in netns or netns in ("", ".", "..") or not Path("/run/netns", netns).exists():
        raise RedirectApplyError(f"no network namespace named {netns!r} (see ip netns list)")
    return ["ip", "netns", "exec", netns]


def _require_tool(command: str, family: int) -> None:
    if shutil.which(command) is None:
        why = "" if family == 4 else " and IPv6 is up here, so IPv6 traffic would bypass the proxy"
        raise RedirectApplyError(
            f"{command} not found{why}: install the iptables package "
            "(Debian: apt-get install iptables)"
        )


def _has_rule(prefix: Sequence[str], tool: str, check: str) -> bool:
    done = _run([*prefix, tool, "-t", "nat", *check.split()])
    return done.returncode == 0


def _run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S
        )
    except FileNotFoundError as exc:
        raise RedirectApplyError(f"{argv[0]} not found: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise RedirectApplyError(f"{argv[0]} did not finish within {_TIMEOUT_S:.0f} s") from exc


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no error output"
