"""Opens the backend a server was configured with."""

from __future__ import annotations

from pathlib import Path

from loom.store.base import Store


def open_store(data_dir: Path | None) -> Store:
    """In-memory store when ``data_dir`` is None (``--dev``), else SQLite under ``data_dir``."""
    if data_dir is None:
        return Store()
    from loom.store.sqlite import SqliteStore

    return SqliteStore(data_dir)
