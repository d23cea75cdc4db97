"""The data directory and its files are the owner's only: a new SQLite store makes them
0700/0600 (``state.db`` holds the CA root key), and one an earlier version left readable is
tightened at start with a log line naming each path."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from loom.filemodes import tighten, write_private
from loom.store.sqlite import SqliteStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_a_new_data_dir_is_0700_and_its_database_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteStore(data)
    try:
        assert _mode(data) == 0o700
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            assert _mode(data / name) == 0o600, name
    finally:
        await store.close()


async def test_a_looser_existing_data_dir_is_tightened_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    first = SqliteStore(data)
    await first.close()
    os.chmod(data, 0o755)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (data / name).exists():
            os.chmod(data / name, 0o644)
    with caplog.at_level(logging.WARNING, logger="loom.filemodes"):
        store = SqliteStore(data)
    try:
        assert _mode(data) == 0o700 and _mode(data / "state.db") == 0o600
        assert f"tightened the mode of {data} from 0755 to 0700" in caplog.text
        assert f"tightened the mode of {data / 'state.db'} from 0644 to 0600" in caplog.text
    finally:
        await store.close()


def test_a_stricter_mode_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    os.chmod(path, 0o400)
    assert tighten(path, 0o600) is False and _mode(path) == 0o400


def test_a_private_file_is_0600_from_its_first_byte_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_private(tmp_path / "key.pem", b"secret")
    finally:
        os.umask(old)
    assert _mode(path) == 0o600 and path.read_bytes() == b"secret"
