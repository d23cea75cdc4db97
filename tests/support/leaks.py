"""What a test may leave behind, named so a failure says what leaked.

The autouse fixtures in ``tests/conftest.py`` compare these before and after a test (or a
module): asyncio tasks still pending on the test's event loop, and child processes of the
pytest process (running, or exited and never waited for: zombies). Children are read from
``/proc/self/task/*/children`` (every thread's, since a child belongs to the thread that forked
it), so no third-party process library is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

_PROC = Path("/proc")
_handed_over: set[int] = set()


def hand_over(pid: int) -> None:
    """Say that a process a test started now belongs to a module-scoped fixture, which stops
    it when the module ends (a replacement server, an extra instance kept for later tests):
    the test's own check skips it, the module's check still requires it gone."""
    _handed_over.add(pid)


def forget_handed_over() -> None:
    """At the end of a module: its fixtures are gone, and their pids may be reused."""
    _handed_over.clear()


def child_processes() -> dict[int, str]:
    """The pytest process's children now: pid -> argv (or ``[comm] <state>`` for a zombie)."""
    pids: set[int] = set()
    for children in (_PROC / "self" / "task").glob("*/children"):
        with contextlib.suppress(OSError):  # a thread that ended between glob and read
            pids.update(int(p) for p in children.read_text().split())
    return {pid: describe_process(pid) for pid in sorted(pids)}


def describe_process(pid: int) -> str:
    """``argv`` joined by spaces; a zombie (no argv left) by its name and state."""
    try:
        argv = (_PROC / str(pid) / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return "(gone)"
    name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
    state = rest.split()[0] if rest else "?"
    if state == "Z":
        return f"[{name}] state Z (exited, never waited for)"
    if argv == [b""]:  # between fork and exec, or a kernel-made name
        return f"[{name}] state {state}"
    return " ".join(a.decode(errors="replace") for a in argv)


def leaked_processes(before: dict[int, str], reported: set[int], *, test: bool = True) -> list[str]:
    """Children present now that were not in ``before``, one line each, except those already
    in ``reported`` (a test's leak is not the module's too) and, for a ``test``, those handed
    over to a module fixture; adds what it returns to ``reported``."""
    skip = reported | _handed_over if test else reported
    new = {
        pid: argv
        for pid, argv in child_processes().items()
        if pid not in before and pid not in skip
    }
    reported.update(new)
    return [f"pid {pid}: {argv}" for pid, argv in new.items()]


def pending_tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Tasks of ``loop`` not done, except the caller's own, with their coroutine's name."""
    current = asyncio.current_task(loop)
    out = []
    for task in asyncio.all_tasks(loop):
        if task is current:
            continue
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", None) or repr(coro)
        state = " (cancelled, never awaited)" if task.cancelling() else ""
        out.append(f"task {task.get_name()}: {name}{state}")
    return sorted(out)


def leak_report(what: str, leaks: list[str]) -> str:
    return f"{what} left behind:\n  " + "\n  ".join(leaks)
