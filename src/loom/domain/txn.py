"""``/v1/txn`` bodies decoded into KV operations (pure: no store, no I/O).

A transaction is a list of at most 64 operations, each ``{"KV": {"Verb", "Key", "Value",
"Flags", "Index", "Session"}}`` as Consul takes it; the single-key HTTP verbs (``PUT
/v1/kv/k?cas=3``) are one-operation transactions of the same shape, so there is one engine
(``loom.control.kv``) and one set of rules. Consul's service, node and check verbs are not
offered: an op that names them is a 400 saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loom.domain.fields import Fields, ValidationError
from loom.domain.kv import MAX_TXN_OPS, check_key, decode_value

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


def parse_txn(body: Any) -> list[KvOp]:
    """The operations of a ``PUT /v1/txn`` body."""
    if not isinstance(body, list):
        raise ValidationError("body: expected a list of operations")
    if len(body) > MAX_TXN_OPS:
        raise TxnTooLarge(f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})")
    return [parse_op(op, f"[{n}]") for n, op in enumerate(body)]


def parse_op(raw: Any, where: str) -> KvOp:
    f = Fields(raw, where)
    kv = f.sub("KV")
    if kv is None:
        other = next((k for k in ("Node", "Service", "Check") if f.has(k)), None)
        if other is not None:
            raise ValidationError(f"{where}.{other}: only KV operations are supported")
        raise ValidationError(f"{where}: expected a KV operation")
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
