"""The state store: one interface, several backends (memory, sqlite, etcd).

Callers only see ``Store``: synchronous reads from an in-memory view, asynchronous atomic
writes (``apply``) that bump one monotonically increasing index, and ``wait`` for blocking
queries. Backends differ only in how a committed transaction is made durable.
"""

from loom.store.base import Delete, Indexer, Op, Put, Store, StoreConflict, StoreError, put
from loom.store.factory import open_store

__all__ = [
    "Delete",
    "Indexer",
    "Op",
    "Put",
    "Store",
    "StoreConflict",
    "StoreError",
    "open_store",
    "put",
]
