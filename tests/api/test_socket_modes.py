"""The unix sockets of the HTTP API and xDS admit their owner and one group only (0660):
another local user gets EACCES, a member of ``--unix-socket-group`` (the sidecars' group in
``loom local``) connects. Each case runs a real client as another uid (a forked child that
drops to it; we run as root), and the 0666 of old is shown to let that user in, so
the refusal is the socket's mode and nothing else."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")

NOBODY = 65534
PROXY = 5995
@pytest.fixture
def where() -> Iterator[Path]:
    # Not under tmp_path: pytest's directories are 0700 and would refuse the other user
    # before the socket's mode is even looked at.
    path = Path(tempfile.mkdtemp(prefix="loom-sockets-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _server(where: Path, *extra: str) -> ServerProcess:
    return ServerProcess(["--dev", "--http-addr", f"unix:{where / 'http.sock'}",
                          "--grpc-addr", f"unix:{where / 'grpc.sock'}", *extra]).start()  # fmt: skip


def _connect_as(uid: int, gid: int, path: Path) -> str:
    """Connect to ``path`` from a forked child that became ``uid``/``gid`` (no other
    groups); what happened, as the child saw it. A fork, not a new interpreter: ours lives
    where other users cannot run it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit
        outcome = b"error"
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
            outcome = b"connected"
        except PermissionError:
            outcome = b"EACCES"
        finally:
            os.write(write, outcome)
            os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            return pipe.read().decode()
    finally:
        os.waitpid(pid, 0)


def test_another_local_user_cannot_connect_to_the_sockets(where: Path) -> None:
    server = _server(where)
    try:
        for name in ("http.sock", "grpc.sock"):
            st = os.stat(where / name)
            assert stat.S_IMODE(st.st_mode) == 0o660, name
            assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
            assert _connect_as(NOBODY, NOBODY, where / name) == "EACCES", name
            assert _connect_as(os.getuid(), os.getgid(), where / name) == "connected"
    finally:
        server.stop()


def test_the_socket_group_connects_and_nobody_else(where: Path) -> None:
    server = _server(where, "--unix-socket-group", str(PROXY))
    try:
        for name in ("http.sock", "grpc.sock"):
            assert os.stat(where / name).st_gid == PROXY
            assert _connect_as(PROXY, PROXY, where / name) == "connected", name
            assert _connect_as(NOBODY, NOBODY, where / name) == "EACCES", name
    finally:
        server.stop()


def test_with_the_old_0666_mode_another_user_did_connect(where: Path) -> None:
    server = _server(where, "--unix-socket-mode", "0666")
    try:
        assert _connect_as(NOBODY, NOBODY, where / "http.sock") == "connected"
    finally:
        server.stop()
