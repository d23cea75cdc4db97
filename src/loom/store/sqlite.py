"""SQLite backend: the default durable store of one server.

Every transaction is written in one SQLite transaction (WAL, ``synchronous=FULL``) before the
write is acknowledged, so a SIGKILL right after a 200 response loses nothing. On open, the whole
state is loaded into the shared in-memory view. The data directory is the owner's only (0700,
``state.db`` 0600: it holds the CA root key).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from loom.filemodes import PRIVATE_FILE, private_dir, private_file, tighten
from loom.store.base import Op, Put, Store, StoreError
from loom.store.tables import decode, encode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (tbl TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                                 idx INTEGER NOT NULL, PRIMARY KEY (tbl, key));
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS table_index (tbl TEXT PRIMARY KEY, idx INTEGER NOT NULL);
"""


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.path = data_dir / "state.db"
        try:
            # The store holds the CA root key: the directory is 0700 and the database (SQLite
            # gives its -wal and -shm files the database's mode) 0600, tightened if looser.
            private_dir(data_dir)
            private_file(self.path)
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for suffix in ("-wal", "-shm"):
                tighten(data_dir / f"state.db{suffix}", PRIVATE_FILE)
            self._db.executescript(_SCHEMA)
            self._load()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc

    def _load(self) -> None:
        for tbl, key, value in self._db.execute("SELECT tbl, key, value FROM docs"):
            self._tables.setdefault(tbl, {})[key] = decode(tbl, json.loads(value))
        for tbl, idx in self._db.execute("SELECT tbl, idx FROM table_index"):
            self._table_index[tbl] = idx
        row = self._db.execute("SELECT value FROM meta WHERE name = 'index'").fetchone()
        self._index = int(row[0]) if row else 0
        self._loaded()

    async def _persist(self, ops: Sequence[Op], index: int) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for op in ops:
                if isinstance(op, Put):
                    text = json.dumps(encode(op.table, op.value), sort_keys=True)
                    self._db.execute(
                        "INSERT OR REPLACE INTO docs (tbl, key, value, idx) VALUES (?, ?, ?, ?)",
                        (op.table, op.key, text, index),
                    )
                else:
                    self._db.execute(
                        "DELETE FROM docs WHERE tbl = ? AND key = ?", (op.table, op.key)
                    )
                self._db.execute(
                    "INSERT OR REPLACE INTO table_index (tbl, idx) VALUES (?, ?)", (op.table, index)
                )
            self._db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('index', ?)", (index,)
            )
            self._db.execute("COMMIT")
        except BaseException as exc:
            # Whatever went wrong (SQLite, a value that cannot be bound or encoded, a
            # cancellation), the transaction must not stay open: the next write would fail with
            # "cannot start a transaction within a transaction".
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot write to the store at {self.path}: {exc}") from exc
            raise

    async def close(self) -> None:
        self._db.close()
