"""The snapshot file format: a round trip keeps every document, and a file that is truncated,
edited, foreign or from another version is refused with the problem named."""

from __future__ import annotations

import gzip
import json

import pytest

from loom.domain.records import Cluster, VirtualIp
from loom.store.archive import ArchiveError, read_archive, write_archive
from loom.store.tables import META, VIPS

TABLES = {
    META.name: {"cluster": Cluster("c-1")},
    VIPS.name: {"default/web": VirtualIp("240.0.0.1"), "default/api": VirtualIp("240.0.0.2")},
    "config": {},
}


def test_a_round_trip_keeps_every_document_in_its_stored_form() -> None:
    archive = read_archive(write_archive(42, TABLES))
    assert archive.index == 42 and archive.count() == 3
    assert archive.tables == {
        "meta": {"cluster": {"ID": "c-1"}},
        "vips": {"default/api": {"Address": "240.0.0.2"}, "default/web": {"Address": "240.0.0.1"}},
    }
    assert write_archive(42, TABLES) == write_archive(42, TABLES)  # no timestamp inside


def test_every_truncation_of_a_snapshot_is_refused() -> None:
    blob = write_archive(7, TABLES)
    for cut in range(len(blob)):
        with pytest.raises(ArchiveError):
            read_archive(blob[:cut])


def _repack(edit) -> bytes:  # type: ignore[no-untyped-def]
    doc = json.loads(gzip.decompress(write_archive(7, TABLES)))
    edit(doc)
    return gzip.compress(json.dumps(doc).encode())


@pytest.mark.parametrize(("blob", "message"), [
    (b"", "not a Loom snapshot (not gzip data)"),
    (b"PK\x03\x04 a zip", "not a Loom snapshot (not gzip data)"),
    (gzip.compress(b"{not json"), "the snapshot is not valid JSON"),
    (gzip.compress(b"[]"), "not a Loom snapshot (Format is not 'loom-snapshot')"),
    (_repack(lambda d: d.update(Version=2)), "snapshot version 2 is not supported"),
    (_repack(lambda d: d["Tables"]["vips"]["default/web"].update(Address="240.0.0.9")),
     "the snapshot's SHA-256 does not match its contents"),
    (_repack(lambda d: d.update(Index=8)), "the snapshot's SHA-256 does not match"),
    (_repack(lambda d: d.update(Index="7")), "snapshot Index: not a non-negative integer"),
])  # fmt: skip
def test_a_foreign_or_edited_file_is_refused_naming_the_problem(blob: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        read_archive(blob)
    assert str(caught.value).startswith(message)


def test_a_document_that_does_not_decode_or_an_unknown_table_is_refused() -> None:
    from loom.store import archive

    def signed(tables: dict) -> bytes:  # type: ignore[type-arg]
        doc = {"Format": "loom-snapshot", "Version": 1, "Index": 3, "Tables": tables,
               "SHA256": archive._digest(3, tables)}  # fmt: skip
        return gzip.compress(json.dumps(doc).encode())

    with pytest.raises(ArchiveError, match=r"snapshot vips/x: cannot be read \(KeyError"):
        read_archive(signed({"vips": {"x": {"Addr": "240.0.0.1"}}}))
    with pytest.raises(ArchiveError, match="snapshot table 'raft' is unknown to this server"):
        read_archive(signed({"raft": {}}))


def test_a_gzip_bomb_is_refused_without_inflating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from loom.store import archive

    monkeypatch.setattr(archive, "MAX_UNPACKED", 1000)
    with pytest.raises(ArchiveError, match="unpacks to more than 1000 bytes"):
        read_archive(gzip.compress(b" " * 100_000))
