"""The snapshot file: every table of the state, versioned and checksummed, in one blob.

``loom snapshot save`` and ``GET /v1/snapshot`` write it; ``loom snapshot restore`` and
``PUT /v1/snapshot`` read it back into any backend. Consul's snapshot is a tar of Raft data;
Loom has no Raft, so the file is its own format (docs/snapshots.md): gzip of one JSON object

    {"Format": "loom-snapshot", "Version": 1, "Index": N, "SHA256": "...",
     "Tables": {"services": {"web": {...stored document...}, ...}, ...}}

where ``SHA256`` is the hex digest of the canonical JSON (sorted keys, no spaces) of
``{"Index", "Tables", "Version"}``. Documents are the stored form (``loom.store.tables``), the
same bytes SQLite and etcd hold, so a file taken from one backend restores into another.

``read_archive`` checks everything before returning (gzip intact, JSON, format and version,
checksum, every table known, every document decodable into its record), raising
``ArchiveError`` naming the first problem: a corrupt or truncated file is refused before
anything is changed. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loom.store.base import StoreError
from loom.store.tables import TABLES, decode, encode

FORMAT = "loom-snapshot"
VERSION = 1
MAX_UNPACKED = 512 * 1024 * 1024
"""Largest snapshot accepted once unzipped, in bytes (a gzip bomb is refused, not inflated)."""

Doc = dict[str, Any]


class ArchiveError(StoreError):
    """The snapshot file is not one this server can restore (the message says why)."""


@dataclass(frozen=True)
class Archive:
    """A checked snapshot: the stored documents of every table, and the index it was taken at."""

    index: int
    tables: dict[str, dict[str, Doc]]

    def count(self) -> int:
        return sum(len(docs) for docs in self.tables.values())


def _digest(index: int, tables: Mapping[str, Mapping[str, Doc]]) -> str:
    canonical = json.dumps(
        {"Index": index, "Tables": tables, "Version": VERSION},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )  # fmt: skip
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_archive(index: int, tables: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The snapshot file of ``tables`` (records or stored documents) at ``index``."""
    docs = {
        name: {key: encode(name, value) for key, value in sorted(values.items())}
        for name, values in sorted(tables.items())
        if values
    }
    doc = {"Format": FORMAT, "Version": VERSION, "Index": index,
           "SHA256": _digest(index, docs), "Tables": docs}  # fmt: skip
    return gzip.compress(json.dumps(doc, sort_keys=True).encode(), mtime=0)


def _unzip(blob: bytes) -> bytes:
    if not blob.startswith(b"\x1f\x8b"):
        raise ArchiveError("not a Loom snapshot (not gzip data)")
    out = zlib.decompressobj(wbits=31)
    try:
        data = out.decompress(blob, MAX_UNPACKED + 1)
    except zlib.error as exc:
        raise ArchiveError(f"the snapshot is corrupt ({exc})") from None
    if len(data) > MAX_UNPACKED:
        raise ArchiveError(f"the snapshot unpacks to more than {MAX_UNPACKED} bytes")
    if not out.eof:
        raise ArchiveError("the snapshot is truncated (the gzip stream ends early)")
    return data


def read_archive(blob: bytes) -> Archive:
    """Check and decode a snapshot file; raises ``ArchiveError`` naming the problem."""
    try:
        doc = json.loads(_unzip(blob))
    except (ValueError, RecursionError) as exc:
        raise ArchiveError(f"the snapshot is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("Format") != FORMAT:
        raise ArchiveError(f"not a Loom snapshot (Format is not {FORMAT!r})")
    if doc.get("Version") != VERSION:
        raise ArchiveError(
            f"snapshot version {doc.get('Version')!r} is not supported (this server reads "
            f"{VERSION})"
        )
    index, tables = doc.get("Index"), doc.get("Tables")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ArchiveError("snapshot Index: not a non-negative integer")
    if not isinstance(tables, dict):
        raise ArchiveError("snapshot Tables: not an object")
    if doc.get("SHA256") != _digest(index, tables):
        raise ArchiveError("the snapshot's SHA-256 does not match its contents (corrupt or edited)")
    for name, docs in tables.items():
        if name not in TABLES:
            raise ArchiveError(f"snapshot table {name!r} is unknown to this server")
        if not isinstance(docs, dict):
            raise ArchiveError(f"snapshot table {name!r}: not an object")
        for key, value in docs.items():
            if not isinstance(value, dict):
                raise ArchiveError(f"snapshot {name}/{key}: not an object")
            try:
                decode(name, value)
            except Exception as exc:  # any decoding failure: the document is not restorable
                raise ArchiveError(f"snapshot {name}/{key}: cannot be read ({exc!r})") from None
    return Archive(index, tables)


__all__ = ["FORMAT", "VERSION", "Archive", "ArchiveError", "read_archive", "write_archive"]
