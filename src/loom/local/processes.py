"""Background processes of the local mesh: started detached, found again by PID, stopped.

A process that cannot be started is a ``LocalProcessError`` naming the program; stopping and
probing never raise (a process already gone is what was wanted).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from loom.local.errors import LocalProcessError


def spawn(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session (it outlives us), output appended to ``log``.

    ``posix_spawn`` rather than ``Popen``: the process is deliberately not waited for by a
    ``Popen`` object; ``alive`` reaps it when it has exited.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        return os.posix_spawnp(
            argv[0], list(argv), {**os.environ, **(env or {})}, file_actions=actions, setsid=True
        )
    except OSError as exc:
        raise LocalProcessError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):  # exited since the waitpid above: reap it if it is ours
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def stop(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(t.strip() for t in text[-lines:])
