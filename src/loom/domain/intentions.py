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

from loom.domain.entries import HttpMatch, IntentionPermission, ServiceIntentions

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
    permissions: tuple[IntentionPermission, ...] = ()
    description: str = ""
    id: str = ""
    """The legacy UUID (``IntentionSource.legacy_id``); empty when it has none."""
    create_index: int = 0
    """The indexes of its destination's ``service-intentions`` entry: they move only when
    that entry is written."""
    modify_index: int = 0

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


def from_entries(entries: Iterable[ServiceIntentions]) -> list[Intention]:
    """Flatten ``service-intentions`` entries, sorted by precedence."""
    out = [
        Intention(
            source_ns=src.namespace,
            source=src.name,
            destination_ns=entry.namespace,
            destination=entry.name,
            action=src.action,
            permissions=src.permissions,
            description=src.description,
            id=src.legacy_id,
            create_index=entry.create_index,
            modify_index=entry.modify_index,
        )
        for entry in entries
        for src in entry.sources
    ]
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


def http_matches(http: HttpMatch, method: str, path: str, headers: dict[str, str]) -> bool:
    """Does one permission's ``HTTP`` block match a request? (Consul's L7 semantics.)"""
    if http.path_exact is not None and path != http.path_exact:
        return False
    if http.path_prefix is not None and not path.startswith(http.path_prefix):
        return False
    if http.path_regex is not None and re.fullmatch(http.path_regex, path) is None:
        return False
    if http.methods and method.upper() not in http.methods:
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    for h in http.headers:
        value = lowered.get(h.name.lower())
        if h.present is not None:
            hit = value is not None
        elif value is None:
            hit = False
        elif h.exact is not None:
            hit = value == h.exact
        elif h.prefix is not None:
            hit = value.startswith(h.prefix)
        elif h.suffix is not None:
            hit = value.endswith(h.suffix)
        elif h.regex is not None:
            hit = re.fullmatch(h.regex, value) is not None
        else:
            hit = value is not None
        if hit == bool(h.invert):
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
        if http_matches(perm.http, method, path, headers or {}):
            allowed = perm.action != DENY
            return Decision(allowed, i, f"matched permission {n} of {i.source} => {i.destination}")
    policy = "allow" if default_allow else "deny"
    return Decision(default_allow, i, f"no permission matched; default policy is {policy}")
