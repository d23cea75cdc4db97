"""File modes of what Loom keeps on disk and the sockets it listens on, in one place.

The data directory holds the CA root key (in ``state.db``) and the server's TLS key, so
nothing in it may be readable by another local user: directories are 0700, files 0600. The
unix sockets of the HTTP API and of xDS let whoever can connect register services and take
certificates, so they are 0660 (owner and one group) unless the operator says otherwise
(Consul's ``unix_sockets.mode``/``group``). Paths made by an earlier version with looser
modes are tightened, and each tightening is logged, so an operator sees what changed.

Leaf module: the standard library only.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("loom.filemodes")

PRIVATE_DIR = 0o700
"""Directories holding keys or state: the owner only."""

PRIVATE_FILE = 0o600
"""Files holding keys or state: the owner only."""

SOCKET_MODE = 0o660
"""API and xDS unix sockets: the owner and the socket's group (sidecars' group)."""


def tighten(path: Path, mode: int) -> bool:
    """Remove from ``path``'s mode every bit ``mode`` does not allow; True if it changed.

    A path already stricter than ``mode`` is left as it is. Missing paths are no change.
    """
    try:
        current = stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
    wanted = current & mode
    if wanted == current:
        return False
    os.chmod(path, wanted)
    log.warning("tightened the mode of %s from %04o to %04o", path, current, wanted)
    return True


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (made 0700 when missing)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner may read (created empty and 0600 when missing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    os.close(fd)
    tighten(path, PRIVATE_FILE)
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` with mode 0600 from its first byte (never world-readable,
    even for an instant); replaces an existing file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def restrict_socket(path: str, mode: int = SOCKET_MODE, group: int | None = None) -> None:
    """Give a listening unix socket its mode and, when ``group`` is set, its group.

    Connecting to a unix socket needs write permission on it, so 0660 admits the owner and
    the group only; the socket is owned by the user running the server.
    """
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, mode)
