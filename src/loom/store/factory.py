"""Opens the backend a server was configured with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from loom.store.base import Store

if TYPE_CHECKING:
    from loom.store.etcd import EtcdSettings


def open_store(data_dir: Path | None, etcd: EtcdSettings | None = None) -> Store:
    """etcd when ``etcd`` is given (connected by ``await store.open()``), else SQLite under
    ``data_dir``, else the in-memory store (``--dev``)."""
    if etcd is not None:
        from loom.store.etcd import EtcdStore

        return EtcdStore(etcd)
    if data_dir is None:
        return Store()
    from loom.store.sqlite import SqliteStore

    return SqliteStore(data_dir)
