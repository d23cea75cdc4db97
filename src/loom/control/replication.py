"""Replication from the primary datacenter: config entries (intentions among them) and ACL
tokens (not ``Local``), policies and roles.

A secondary (``--primary-datacenter`` set and not itself) runs one ``Replicator`` per set
(``CONFIG`` and ``ACL``): a blocking query on the primary's dump of the set
(``GET /v1/loom/replication/<set>``, with the replication token), then the difference
between that dump and this store applied in one store transaction, so a reader sees all of
a round or none of it. Replicated records keep the primary's keys (entry names, intention
IDs, accessor and policy IDs); their create and modify indexes are this store's, as Consul's
secondaries keep their own raft indexes. ``status`` is what ``GET /v1/acl/replication``
and ``GET /v1/loom/replication`` report, in Consul's shape.

How the dump is fetched is given (``Fetch``, the server's WAN client): this module does no
network I/O itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from loom.acl.records import ANONYMOUS_ACCESSOR_ID, GLOBAL_MANAGEMENT_ID
from loom.acl.stored import Stored
from loom.control.configs import Configs
from loom.domain.fields import ValidationError
from loom.errors import LoomError
from loom.ratelog import RateLimitedLog
from loom.store import Delete, Op, Store, put
from loom.store.tables import ACL_POLICIES, ACL_ROLES, ACL_TOKENS, CONFIG, Table, decode

log = logging.getLogger("loom.control.replication")
noisy = RateLimitedLog(log)
Doc = dict[str, Any]
Fetch = Callable[[str, Mapping[str, str]], Awaitable[tuple[int, dict[str, str], bytes]]]
"""``fetch(path, query)`` -> ``(status, headers, body)`` of a GET on the primary."""

CONFIG_SET = "config"
ACL_SET = "acl"
ACL_REPLICATED = (ACL_TOKENS, ACL_POLICIES, ACL_ROLES)
WAIT_S = 30.0
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
MIN_ROUND_S = 0.05
"""At least this long between two rounds that saw no change (a primary answering a blocking
query at once, again and again, would otherwise be asked in a tight loop)."""
NEVER = "0001-01-01T00:00:00Z"
"""Consul's zero time, for "not yet"."""


class ReplicationError(LoomError):
    """A round that could not be applied (the primary refused, or sent something unreadable)."""


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ReplicationStatus:
    """Consul's ``/v1/acl/replication`` fields."""

    enabled: bool = False
    running: bool = False
    source_datacenter: str = ""
    replication_type: str = ""
    replicated_index: int = 0
    replicated_role_index: int = 0
    replicated_token_index: int = 0
    last_success: str = NEVER
    last_error: str = NEVER
    last_error_message: str = ""

    def to_json(self) -> Doc:
        return {
            "Enabled": self.enabled, "Running": self.running,
            "SourceDatacenter": self.source_datacenter, "ReplicationType": self.replication_type,
            "ReplicatedIndex": self.replicated_index,
            "ReplicatedRoleIndex": self.replicated_role_index,
            "ReplicatedTokenIndex": self.replicated_token_index,
            "LastSuccess": self.last_success, "LastError": self.last_error,
            "LastErrorMessage": self.last_error_message,
        }  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    """Equal records but for this store's indexes."""
    if isinstance(a, Stored) and isinstance(b, Stored):
        return bool(a.record == b.record)
    zeroed = {"create_index": 0, "modify_index": 0}
    return bool(replace(a, **zeroed) == replace(b, **zeroed))


def _restamp(value: Any, old: Any, index: int) -> Any:
    created = index if old is None else old.create_index
    if isinstance(value, Stored):
        return Stored(value.record, created, index)
    return replace(value, create_index=created, modify_index=index)


BUILTINS = frozenset({ANONYMOUS_ACCESSOR_ID, GLOBAL_MANAGEMENT_ID})
"""Records every server makes itself: replaced by the primary's, never deleted (a primary
without ACLs sends none, and a secondary without its anonymous token would refuse all)."""


def diff_ops(
    table: Table[Any], remote: dict[str, Any], local: dict[str, Any], index: int
) -> list[Op]:
    """The writes that make ``local`` (this store's records of ``table`` under replication)
    equal ``remote`` (the primary's), indexes aside."""
    ops: list[Op] = []
    for key, value in remote.items():
        old = local.get(key)
        if old is None or not _same(old, value):
            ops.append(put(table, key, _restamp(value, old, index)))
    ops.extend(
        Delete(table.name, key) for key in local if key not in remote and key not in BUILTINS
    )
    return ops


def _decoded(table: Table[Any], docs: Any, key: Callable[[Any], str]) -> dict[str, Any]:
    if not isinstance(docs, list):
        raise ValidationError(f"replication: {table.name}: expected a list")
    out: dict[str, Any] = {}
    for doc in docs:
        if not isinstance(doc, dict):
            raise ValidationError(f"replication: {table.name}: expected objects")
        try:
            value = decode(table.name, doc)
        except (KeyError, TypeError, ValueError, LoomError) as exc:
            raise ValidationError(f"replication: {table.name}: unreadable record ({exc})") from exc
        out[key(value)] = value
    return out


class Replicator:
    """Keeps one set of this store's records equal to the primary's."""

    def __init__(
        self,
        which: str,
        store: Store,
        lock: asyncio.Lock,
        configs: Configs,
        primary: str,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.which = which
        self.store = store
        self.lock = lock
        self.configs = configs
        self.status = ReplicationStatus(
            enabled=True,
            source_datacenter=primary,
            replication_type="tokens" if which == ACL_SET else "config-entries",
        )
        self._clock = clock
        self._moved = asyncio.Event()

    def _ops(self, dump: Doc, index: int) -> list[Op]:
        if self.which == CONFIG_SET:
            remote = _decoded(CONFIG, dump.get("Entries"), lambda e: str(e.key))
            local = dict(self.store.items(CONFIG.name))
            ops = diff_ops(CONFIG, remote, local, index)
            return [*ops, *self.configs.external_vip_ops(remote)] if ops else []
        ops = []
        for table, field, key in (
            (ACL_POLICIES, "Policies", lambda s: s.record.id),
            (ACL_ROLES, "Roles", lambda s: s.record.id),
            (ACL_TOKENS, "Tokens", lambda s: s.record.accessor_id),
        ):
            remote = _decoded(table, dump.get(field), key)
            local = dict(self.store.items(table.name))
            if table is ACL_TOKENS:  # a local token stays this datacenter's own
                remote = {k: v for k, v in remote.items() if not v.record.local}
                local = {k: v for k, v in local.items() if not v.record.local}
            ops.extend(diff_ops(table, remote, local, index))
        return ops

    async def apply(self, dump: Doc, remote_index: int) -> int:
        """Make this store's set equal ``dump`` (the primary's at ``remote_index``) in one
        transaction; returns how many records changed."""
        async with self.lock:
            ops = self._ops(dump, self.store.index + 1)
            await self.store.apply(ops)
        s = self.status
        s.replicated_index = remote_index
        if self.which == ACL_SET:
            s.replicated_token_index = int(dump.get("TokenIndex", remote_index))
            s.replicated_role_index = int(dump.get("RoleIndex", remote_index))
        s.running, s.last_success = True, _stamp(self._clock())
        self._moved.set()
        self._moved = asyncio.Event()
        return len(ops)

    def failed(self, message: str) -> None:
        self.status.last_error, self.status.last_error_message = _stamp(self._clock()), message

    async def caught_up(self, remote_index: int, timeout_s: float) -> bool:
        """Wait until a round at ``remote_index`` or later is applied (or ``timeout_s``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.status.replicated_index < remote_index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._moved.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def run(self, fetch: Fetch) -> None:
        """Follow the primary's dump with blocking queries until cancelled."""
        path = f"/v1/loom/replication/{self.which}"
        index, delay = 0, BACKOFF_FIRST_S
        loop = asyncio.get_running_loop()
        while True:
            query = {"index": str(index), "wait": f"{WAIT_S:g}s"} if index else {}
            began = loop.time()
            try:
                status, headers, body = await fetch(path, query)
                if status != 200:
                    text = body.decode(errors="replace").strip()[:200]
                    raise ReplicationError(f"the primary answered {status}: {text}")
                got = int(headers.get("X-Consul-Index", "0") or 0)
                if got != index or index == 0:
                    try:
                        dump = json.loads(body)
                    except ValueError as exc:
                        raise ReplicationError(f"unreadable answer ({exc})") from exc
                    if not isinstance(dump, dict):
                        raise ReplicationError("unreadable answer (not an object)")
                    await self.apply(dump, got)
                if (got <= index or got == 0) and loop.time() - began < MIN_ROUND_S:
                    await asyncio.sleep(MIN_ROUND_S)
                index = got if got > 0 else 0
                delay = BACKOFF_FIRST_S
                continue
            except (LoomError, ValueError) as exc:
                self.failed(str(exc))
                noisy.warning(f"replicate {self.which}", "replication of %s: %s", self.which, exc)
            index = 0
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


__all__ = ["ACL_SET", "CONFIG_SET", "ReplicationStatus", "Replicator", "diff_ops"]
