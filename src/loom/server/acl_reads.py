"""The filtering of list reads under ACLs: what a token may see of the items a handler found.

The middleware (``loom.server.guard``) decides a request by its route before the handler
runs; a list's answer can only be filtered once the handler has it, item by item, which is
this module: ``visible`` keeps what the request's token may read (by the ``can_read_*``
rules of each kind of item) and marks the response filtered when it left something out.
``Reads`` memoises an authorizer's answers, as one list asks the same question many times.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import TypeVar

from aiohttp import web

from loom.acl.authorizer import Authorizer
from loom.acl.rules import Access
from loom.domain.entries import ConfigEntry
from loom.domain.intentions import Intention
from loom.domain.records import Check, Instance
from loom.server.guard import _FILTERED, R, authorizer, entry_need

T = TypeVar("T")


class Reads:
    """An authorizer's read answers, memoised: a list of 1,000 instances of one service on one
    node costs two decisions, not 2,000. Kept per ``Authorizer`` (which is immutable and
    replaced when an ACL table changes), so the memo lives as long as the answers hold."""

    def __init__(self, authz: Authorizer) -> None:
        self.authz = authz
        self._memo: dict[tuple[str, Access, str], bool] = {}
        self.every_service = authz.service_read_all()
        self.every_node = authz.node_read_all()

    def allowed(self, resource: str, access: Access, name: str = "") -> bool:
        key = (resource, access, name)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) > MEMO_MAX:
                self._memo.clear()
            found = self._memo[key] = self.authz.allowed(resource, access, name)
        return found

    def service_read(self, name: str) -> bool:
        return self.every_service or self.allowed("service", R, name)

    def node_read(self, name: str) -> bool:
        return self.every_node or self.allowed("node", R, name)

    def intention_read(self, name: str) -> bool:
        return self.allowed("intention", R, name)


MEMO_MAX = 10_000
_READS: weakref.WeakKeyDictionary[Authorizer, Reads] = weakref.WeakKeyDictionary()


def reads_of(authz: Authorizer) -> Reads:
    found = _READS.get(authz)
    if found is None:
        found = _READS[authz] = Reads(authz)
    return found


def visible(
    request: web.Request, items: Iterable[T], allowed: Callable[[Reads, T], bool]
) -> list[T]:
    """The items the request's token may see; marks the response filtered if any were not."""
    authz = authorizer(request)
    every = list(items)
    if authz is None:
        return every
    reads = reads_of(authz)
    shown = [item for item in every if allowed(reads, item)]
    if len(shown) != len(every):
        request[_FILTERED] = True
    return shown


def mark_filtered(request: web.Request) -> None:
    request[_FILTERED] = True


def can_read_service(authz: Reads, inst: Instance) -> bool:
    """The agent endpoints' filter: the service alone (the node is the agent's own)."""
    return authz.service_read(inst.service)


def can_read_agent_check(authz: Reads, c: Check) -> bool:
    return authz.service_read(c.service_name) if c.service_name else authz.node_read(c.node)


def can_read_instance(authz: Reads, inst: Instance) -> bool:
    return authz.service_read(inst.service) and authz.node_read(inst.node)


def can_read_check(authz: Reads, c: Check) -> bool:
    """The catalog's filter of a check: its node, and its service if it has one."""
    return authz.node_read(c.node) and (not c.service_name or authz.service_read(c.service_name))


def can_read_intention(authz: Reads, i: Intention) -> bool:
    return authz.intention_read(i.destination)


def can_read_entry(authz: Reads, entry: ConfigEntry) -> bool:
    need = entry_need(entry.kind, entry.name, Access.READ)
    return need is None or authz.allowed(*need)
