"""``loom snapshot save FILE`` / ``loom snapshot restore FILE``: Consul's commands, over
``GET``/``PUT /v1/snapshot`` (a management token when ACLs are on).

The file is Loom's own format (docs/snapshots.md). ``save`` writes it beside FILE and renames
it into place, so an interrupted save never leaves a half file under the name; ``restore``
sends it as it is, and the server checks it whole before changing anything.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from loom.cli.api import _addr, _client
from loom.cli.errors import InputError

if TYPE_CHECKING:
    from loom.cli import Commands

TIMEOUT_S = 300.0
"""A large state takes a while to pack or restore; the usual 30 s would cut it off."""


def _save(args: argparse.Namespace) -> int:
    answer = _client(args).request("GET", "/v1/snapshot", timeout=TIMEOUT_S)
    path = Path(args.file)
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "wb") as out:
            out.write(answer.raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    print(f"Saved snapshot at index {answer.index} to {path} ({len(answer.raw)} bytes)")
    return 0


def _restore(args: argparse.Namespace) -> int:
    try:
        blob = Path(args.file).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    answer = _client(args).request("PUT", "/v1/snapshot", blob, timeout=TIMEOUT_S)
    print(f"Restored snapshot {args.file} (now at index {answer.index})")
    return 0


def register(commands: Commands) -> None:
    snap = commands.group("snapshot", "save and restore the whole state of the server")
    p = snap.add_parser("save", help="save the server's whole state to FILE")
    p.add_argument("file", help="snapshot file to write (replaced whole, never half-written)")
    _addr(p)
    p.set_defaults(func=_save)
    p = snap.add_parser(
        "restore", help="replace the server's whole state by the snapshot in FILE (all or nothing)"
    )
    p.add_argument("file", help="snapshot file written by `loom snapshot save`")
    _addr(p)
    p.set_defaults(func=_restore)
