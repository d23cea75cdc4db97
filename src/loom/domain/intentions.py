"""Intentions: who may connect to whom, and which rule wins.

Intentions are stored as ``service-intentions`` config entries (Consul >= 1.9): one entry per
destination holding a list of sources. This module flattens entries into ``Intention`` values,
orders them by Consul's precedence (exact names beat wildcards, destination beats source) and
decides a (source, destination) pair. The same decision feeds the HTTP ``check`` endpoint and
the Envoy RBAC filters, so the two can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

WILDCARD = "*"
ALLOW = "allow"
DENY = "deny"


@dataclass(frozen=True)
class Intention:
    source_ns: str
    source: str
    destination_ns: str
    destination: str
    action: str  # "allow" | "deny" | "" when decided by L7 permissions
    permissions: tuple[dict[str, Any], ...] = ()
    description: str = ""

    @property
    def precedence(self) -> int:
        return precedence(self.source_ns, self.source, self.destination_ns, self.destination)

    def matches(self, source_ns: str, source: str, destination_ns: str, destination: str) -> bool:
        return (
            _match(self.source_ns, source_ns)
            and _match(self.source, source)
            and _match(self.destination_ns, destination_ns)
            and _match(self.destination, destination)
        )

    def to_api(self, index: int) -> dict[str, Any]:
        """Consul's legacy Intention JSON (``/v1/connect/intentions``)."""
        return {
            "ID": "",
            "Description": self.description,
            "SourceNS": self.source_ns,
            "SourceName": self.source,
            "DestinationNS": self.destination_ns,
            "DestinationName": self.destination,
            "SourceType": "consul",
            "Action": self.action,
            "Permissions": list(self.permissions),
            "Precedence": self.precedence,
            "Meta": {},
            "CreateIndex": index,
            "ModifyIndex": index,
        }


def _match(pattern: str, value: str) -> bool:
    return pattern in (WILDCARD, value)


def precedence(source_ns: str, source: str, destination_ns: str, destination: str) -> int:
    """Consul's precedence table: 9 (all exact) down to 1 (all wildcards)."""
    dst = 3 if destination_ns == WILDCARD else (1 if destination == WILDCARD else 2)
    dst_base = {2: 6, 1: 3, 3: 0}[dst]
    if source_ns == WILDCARD:
        src = 1
    elif source == WILDCARD:
        src = 2
    else:
        src = 3
    return dst_base + src


def sort_key(i: Intention) -> tuple[int, str, str, str, str]:
    """Highest precedence first; ties broken by names for a stable order."""
    return (-i.precedence, i.source_ns, i.source, i.destination_ns, i.destination)


def from_entries(entries: Iterable[dict[str, Any]]) -> list[Intention]:
    """Flatten stored ``service-intentions`` entries, sorted by precedence."""
    out = []
    for entry in entries:
        for src in entry.get("Sources", []):
            out.append(
                Intention(
                    source_ns=src.get("Namespace", "default"),
                    source=src["Name"],
                    destination_ns=entry.get("Namespace", "default"),
                    destination=entry["Name"],
                    action=src.get("Action", ""),
                    permissions=tuple(src.get("Permissions", [])),
                    description=src.get("Description", ""),
                )
            )
    return sorted(out, key=sort_key)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    intention: Intention | None  # None: the default policy decided
    reason: str


def decide(
    intentions: Iterable[Intention],
    source_ns: str,
    source: str,
    destination_ns: str,
    destination: str,
    default_allow: bool,
) -> Decision:
    """The L4 decision for one pair: the highest-precedence matching intention, else default.

    An intention with L7 permissions allows the connection at L4; its permissions are
    enforced per request by the destination's HTTP filters.
    """
    ordered = sorted(intentions, key=sort_key)
    for i in ordered:
        if i.matches(source_ns, source, destination_ns, destination):
            allowed = i.action != DENY
            what = "L7 permissions" if not i.action else i.action
            return Decision(allowed, i, f"matched intention {i.source} => {i.destination} ({what})")
    policy = "allow" if default_allow else "deny"
    return Decision(default_allow, None, f"no intention matched; default policy is {policy}")


def http_matches(http: dict[str, Any], method: str, path: str, headers: dict[str, str]) -> bool:
    """Does one permission's ``HTTP`` block match a request? (Consul's L7 semantics.)"""
    if "PathExact" in http and path != http["PathExact"]:
        return False
    if "PathPrefix" in http and not path.startswith(http["PathPrefix"]):
        return False
    if "PathRegex" in http and re.fullmatch(http["PathRegex"], path) is None:
        return False
    if http.get("Methods") and method.upper() not in http["Methods"]:
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    for h in http.get("Header", []):
        value = lowered.get(h["Name"].lower())
        if "Present" in h:
            hit = value is not None
        elif value is None:
            hit = False
        elif "Exact" in h:
            hit = value == h["Exact"]
        elif "Prefix" in h:
            hit = value.startswith(h["Prefix"])
        elif "Suffix" in h:
            hit = value.endswith(h["Suffix"])
        elif "Regex" in h:
            hit = re.fullmatch(h["Regex"], value) is not None
        else:
            hit = value is not None
        if hit == bool(h.get("Invert")):
            return False
    return True


def decide_request(
    intentions: Iterable[Intention],
    source_ns: str,
    source: str,
    destination_ns: str,
    destination: str,
    default_allow: bool,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
) -> Decision:
    """The L7 decision for one HTTP request.

    The highest-precedence matching intention decides. With an Action, that is it. With
    Permissions, the first permission matching the request decides; if none matches, the
    default policy does (not lower-ranked intentions), as Consul documents.
    """
    first = decide(intentions, source_ns, source, destination_ns, destination, default_allow)
    i = first.intention
    if i is None or i.action:
        return first
    for n, perm in enumerate(i.permissions):
        if http_matches(perm["HTTP"], method, path, headers or {}):
            allowed = perm["Action"] != DENY
            return Decision(allowed, i, f"matched permission {n} of {i.source} => {i.destination}")
    policy = "allow" if default_allow else "deny"
    return Decision(default_allow, i, f"no permission matched; default policy is {policy}")
