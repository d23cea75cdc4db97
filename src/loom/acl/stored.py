"""ACL records as the store keeps them: the record plus the indexes Consul reports with it.

Tokens, policies, roles, auth methods and binding rules are stored in Consul's JSON shape
(``to_json``) with ``CreateIndex`` and ``ModifyIndex`` beside the record's own fields, so the
stored documents read like Consul's API answers. ``Stored`` is the decoded form: the typed
record and its two indexes. Pure: the codecs here are what ``loom.store.tables`` names for
the ACL tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from loom.acl.binding import BindingRule
from loom.acl.records import AuthMethod, Policy, Role, Token

Doc = dict[str, Any]


R = TypeVar("R", Token, Policy, Role, AuthMethod, BindingRule)


@dataclass(frozen=True)
class Stored(Generic[R]):
    record: R
    create_index: int
    modify_index: int

    def to_json(self) -> Doc:
        return {
            **self.record.to_json(),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


def encoder(value: Stored[Any]) -> Doc:
    return value.to_json()


def decoder(read: Callable[[object], R]) -> Callable[[Doc], Stored[R]]:
    """Stored document -> ``Stored`` record (the record's strict reader skips the indexes)."""

    def decode(doc: Doc) -> Stored[R]:
        return Stored(read(doc), int(doc.get("CreateIndex", 0)), int(doc.get("ModifyIndex", 0)))

    return decode


__all__ = ["Stored", "decoder", "encoder"]
