"""The KV store's and sessions' records, and the pure checks of what clients send for them.

Consul's KV is a flat map of string keys to byte values with flags, a lock holder (a
session) and per-entry indexes; sessions hold locks and end (are "invalidated") by destroy,
TTL expiry or a linked check going critical. These records are what the core works on and
what ``loom.store.tables`` persists; the decoders here turn request bodies and query strings
into them, with one-line errors naming the field (``ValidationError``: a 400). No I/O.

Transactions: a ``/v1/txn`` body is a list of at most 64 operations, each ``{"KV": {"Verb",
"Key", "Value", "Flags", "Index", "Session"}}`` as Consul takes it, decoded into ``KvOp``s;
the single-key HTTP verbs (``PUT /v1/kv/k?cas=3``) are one-op transactions of the same
shape, so there is one engine (``loom.control.kv``) and one set of rules. Consul's service,
node and check verbs are not offered: an op that names them is a 400 saying so.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loom.domain.catalog_txn import CATALOG_KINDS, CatalogOp, parse_catalog_op
from loom.domain.fields import Fields, ValidationError, parse_duration

MAX_VALUE_BYTES = 512 * 1024
"""Largest value accepted (Consul's ``kv_max_value_size`` default: Raft's suggested limit)."""
MAX_KEY_BYTES = 4096
"""Longest key accepted, in UTF-8 bytes. Consul sets none (its Raft log bounds it); a bound
keeps a hostile client from filling the store's key index with megabyte names."""
MAX_TXN_OPS = 64
"""Operations in one ``/v1/txn`` (Consul's ``txn_max_req_len`` counts ops: 64)."""

RELEASE, DELETE = "release", "delete"
DEFAULT_LOCK_DELAY_S = 15.0
"""Consul's default: a lock freed by an invalidated session stays free for 15 s."""
MAX_LOCK_DELAY_S = 60.0
"""Consul caps LockDelay at 60 s."""
MIN_TTL_S, MAX_TTL_S = 10.0, 86400.0
"""Consul's bounds of a session TTL."""
SERF_HEALTH = "serfHealth"
"""Consul's default node check; Loom has no gossip, so the check always passes."""


@dataclass(frozen=True)
class KvEntry:
    """One key of the KV store."""

    key: str
    value: bytes | None
    """None: stored without a body (Consul answers ``"Value": null``)."""
    flags: int = 0
    """An opaque uint64 for clients (Consul's ``?flags=``)."""
    lock_index: int = 0
    """How many times the key's lock was acquired."""
    session: str = ""
    """ID of the session holding the lock; empty: unlocked."""
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class ServiceCheckRef:
    """A service check a session is linked to (Consul's ``ServiceChecks`` item)."""

    id: str
    namespace: str = "default"


@dataclass(frozen=True)
class Session:
    """A session: what holds KV locks, and what ends them."""

    id: str
    node: str
    name: str = ""
    lock_delay_ns: int = int(DEFAULT_LOCK_DELAY_S * 1e9)
    behavior: str = RELEASE
    """What invalidation does to the keys it holds: release them, or delete them."""
    ttl: str = ""
    """As given (``30s``); empty: no TTL."""
    node_checks: tuple[str, ...] = ()
    service_checks: tuple[ServiceCheckRef, ...] = ()
    create_index: int = 0
    modify_index: int = 0

    @property
    def ttl_s(self) -> float:
        return parse_duration(self.ttl, "TTL") if self.ttl else 0.0

    @property
    def lock_delay_s(self) -> float:
        return self.lock_delay_ns / 1e9


# -- keys and values --------------------------------------------------------------------------


def check_key(key: str, where: str = "key", allow_empty: bool = False) -> str:
    """A key as Consul takes it, refusing what Loom cannot keep safely: NUL, text that is not
    valid UTF-8 (lone surrogates, which is how undecodable bytes arrive), and huge keys."""
    if not key and not allow_empty:
        raise ValidationError("Missing key name")
    if "\x00" in key:
        raise ValidationError(f"{where}: must not contain NUL")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{where}: is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise ValidationError(f"{where}: longer than {MAX_KEY_BYTES} bytes")
    return key


def parse_uint(raw: str | None, where: str) -> int | None:
    """A query-string unsigned integer (``?flags=``, ``?cas=``); None when absent."""
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,20}", raw) or int(raw) >= 1 << 64:
        raise ValidationError(f"{where}: {raw!r} is not an unsigned 64-bit integer")
    return int(raw)


def keys_under(keys: Iterable[str], prefix: str, separator: str) -> list[str]:
    """``?keys&separator=``: the keys under ``prefix``, each cut after the first separator
    past the prefix (so ``a/b/c`` under ``a/`` with ``/`` is ``a/b/``), without duplicates."""
    out: list[str] = []
    for key in keys:
        if not key.startswith(prefix):
            continue
        if separator:
            at = key.find(separator, len(prefix))
            if at >= 0:
                key = key[: at + len(separator)]
        if not out or out[-1] != key:
            out.append(key)
    return out


def decode_value(raw: Any, where: str) -> bytes | None:
    """A base64 ``Value`` of a transaction op (None or empty: no value)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ValidationError(f"{where}: expected a base64 string")
    try:
        value = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"{where}: is not valid base64") from None
    if len(value) > MAX_VALUE_BYTES:
        raise ValidationError(f"{where}: larger than {MAX_VALUE_BYTES} bytes")
    return value


def encode_value(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


# -- sessions ------------------------------------------------------------------------------------


def parse_lock_delay(raw: Any, where: str = "LockDelay") -> int:
    """LockDelay in nanoseconds, from ``"15s"`` or a number (Consul: a number under 1000 is
    seconds, anything else nanoseconds); capped at 60 s as Consul caps it."""
    if raw is None or raw == "":
        return int(DEFAULT_LOCK_DELAY_S * 1e9)
    if isinstance(raw, bool):
        raise ValidationError(f"{where}: expected a duration")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise ValidationError(f"{where}: expected a finite duration")
        seconds = float(raw) if raw < 1000 else float(raw) / 1e9
    elif isinstance(raw, str):
        seconds = parse_duration(raw, where)
    else:
        raise ValidationError(f"{where}: expected a duration")
    if seconds < 0:
        raise ValidationError(f"{where}: must not be negative")
    return int(min(seconds, MAX_LOCK_DELAY_S) * 1e9)


def check_ttl(raw: str, where: str = "TTL") -> str:
    if not raw:
        return ""
    seconds = parse_duration(raw, where)
    if seconds != 0 and not MIN_TTL_S <= seconds <= MAX_TTL_S:
        raise ValidationError(f"Invalid Session TTL '{raw}', must be between [10s=24h0m0s]")
    return "" if seconds == 0 else raw


def parse_session(body: Any, default_node: str) -> Session:
    """A new session from a ``PUT /v1/session/create`` body (its ID and indexes unset).

    Checks: without ``Checks`` and ``NodeChecks`` Consul links ``serfHealth``; Loom has no
    gossip health, so the default is no node check at all (and ``serfHealth``, if named, is a
    check that always passes)."""
    f = Fields(body if body else {}, "")
    behavior = f.text("Behavior", RELEASE) or RELEASE
    if behavior not in (RELEASE, DELETE):
        raise ValidationError(f"Invalid Behavior setting '{behavior}'")
    node_checks = [*f.strs("Checks"), *f.strs("NodeChecks")]
    services = tuple(
        ServiceCheckRef(s.text("ID", required=True), s.text("Namespace", "default") or "default")
        for s in f.subs("ServiceChecks")
    )
    return Session(
        id="",
        node=f.text("Node") or default_node,
        name=f.text("Name"),
        lock_delay_ns=parse_lock_delay(f.raw("LockDelay")),
        behavior=behavior,
        ttl=check_ttl(f.text("TTL")),
        node_checks=tuple(dict.fromkeys(node_checks)),
        service_checks=services,
    )


# -- transactions ----------------------------------------------------------------------------

VERBS = (
    "set", "cas", "lock", "unlock", "get", "get-tree", "check-index", "check-session",
    "check-not-exists", "delete", "delete-tree", "delete-cas",
)  # fmt: skip
READ_VERBS = frozenset({"get", "get-tree", "check-index", "check-session", "check-not-exists"})
"""Verbs that change nothing: a transaction of only these is a read."""
TREE_VERBS = frozenset({"get-tree", "delete-tree"})
"""Verbs on a prefix (their key may be empty: the whole store)."""


class TxnTooLarge(ValidationError):
    """More operations than Consul allows in one transaction (a 413)."""


@dataclass(frozen=True)
class KvOp:
    """One KV operation of a transaction."""

    verb: str
    key: str
    value: bytes | None = None
    flags: int = 0
    index: int = 0
    """The ModifyIndex ``cas``, ``delete-cas`` and ``check-index`` compare with."""
    session: str = ""
    """The session of ``lock``, ``unlock`` and ``check-session``."""

    @property
    def reads_only(self) -> bool:
        return self.verb in READ_VERBS


def parse_txn(body: Any) -> list[KvOp | CatalogOp]:
    """The operations of a ``PUT /v1/txn`` body: KV ops and catalog (``Node``, ``Service``,
    ``Check``) ops, in order."""
    if not isinstance(body, list):
        raise ValidationError("body: expected a list of operations")
    if len(body) > MAX_TXN_OPS:
        raise TxnTooLarge(f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})")
    return [parse_any_op(op, f"[{n}]") for n, op in enumerate(body)]


def parse_any_op(raw: Any, where: str) -> KvOp | CatalogOp:
    f = Fields(raw, where)
    for kind in CATALOG_KINDS:
        sub = f.sub(kind)
        if sub is not None and not f.has("KV"):
            return parse_catalog_op(sub, kind)
    return parse_op(raw, where)


def parse_op(raw: Any, where: str) -> KvOp:
    f = Fields(raw, where)
    kv = f.sub("KV")
    if kv is None:
        raise ValidationError(f"{where}: expected a KV, Node, Service or Check operation")
    verb = kv.one_of("Verb", VERBS)
    key = check_key(kv.text("Key"), kv.where("Key"), allow_empty=verb in TREE_VERBS)
    return KvOp(
        verb=verb,
        key=key,
        value=decode_value(kv.raw("Value"), kv.where("Value")),
        flags=kv.integer("Flags", 0, 0, (1 << 64) - 1),
        index=kv.integer("Index", 0, 0, (1 << 64) - 1),
        session=kv.text("Session"),
    )
