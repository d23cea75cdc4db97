"""A write that fails inside a SQLite transaction, for any reason, leaves no transaction open:
the next, unrelated write succeeds (issue 11: one bad value used to poison every later write)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.store import Put
from loom.store.sqlite import SqliteStore


async def test_a_value_sqlite_cannot_bind_rolls_back_and_the_next_write_succeeds(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path)
    await store.open()
    try:
        before = store.index
        with pytest.raises(UnicodeEncodeError):  # a lone surrogate cannot be bound as text
            await store.apply([Put("things", "ok", {"a": 1}), Put("things", "\ud800", {"a": 2})])
        assert store.index == before
        assert store.get("things", "ok") is None  # nothing of the failed write is visible
        index = await store.apply([Put("things", "next", {"a": 3})])
        assert index == before + 1
        assert store.get("things", "next") == {"a": 3}
    finally:
        await store.close()
    reopened = SqliteStore(tmp_path)
    await reopened.open()
    try:
        assert reopened.get("things", "ok") is None  # nor was it persisted
        assert reopened.get("things", "next") == {"a": 3}
    finally:
        await reopened.close()
