"""Log lines that a client can cause, bounded: the first few of a kind, then one summary.

A server that writes a line (or a traceback) per malformed request, per NACK or per bad
packet lets any client fill its disk: issue 11 measured 3.6 MB of tracebacks in three
minutes of oversized URLs and 21.5 MB for 30,000 NACKs. Every such line goes through a
``RateLimitedLog``: per *kind* (a short, fixed label such as ``"http 400"`` or ``"xds nack"``,
never something the client chooses freely), the first ``burst`` lines of each ``interval_s``
are written, later ones are counted, and once the interval is over one line says how many
were suppressed. ``flush`` writes the summaries of intervals that ended with no further line
of their kind (the server calls ``flush_all`` periodically and at shutdown), so a flood that
stops is still accounted for.

``LogRate`` is the counting alone (no I/O, the clock is an argument), so it is tested
without logging or sleeping.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_KINDS = 256
"""Kinds tracked at once; beyond this, lines share one ``"other"`` kind (kinds are fixed
labels, so this only guards against a caller that builds them from input by mistake)."""


@dataclass(frozen=True)
class RateSettings:
    """How much of a flood is written."""

    burst: int = 10
    """Lines of one kind written per interval before the rest are only counted: enough to
    see the pattern (and the first occurrence, which is the one worth reading)."""

    interval_s: float = 60.0
    """Seconds per window (monotonic clock): at most ``burst`` + 1 lines per kind per
    minute, whatever the client sends."""


@dataclass
class _Window:
    start: float
    written: int
    suppressed: int


class LogRate:
    """Per-kind windows: which lines to write, and how many were suppressed."""

    def __init__(
        self, settings: RateSettings = RateSettings(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, kind: str) -> tuple[bool, int]:
        """Whether to write this line, and the count suppressed in the window it closes
        (to report first; 0 when none)."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None and len(self._windows) >= MAX_KINDS:
            kind = "other"
            window = self._windows.get(kind)
        if window is None or now - window.start >= self.settings.interval_s:
            closed = window.suppressed if window is not None else 0
            self._windows[kind] = _Window(now, 1, 0)
            return True, closed
        if window.written < self.settings.burst:
            window.written += 1
            return True, 0
        window.suppressed += 1
        return False, 0

    def due(self) -> list[tuple[str, int]]:
        """Windows that are over: (kind, suppressed) for those that suppressed anything.
        They are forgotten, so the next line of their kind is written and starts anew."""
        now = self._clock()
        over = [k for k, w in self._windows.items() if now - w.start >= self.settings.interval_s]
        out = [(k, self._windows[k].suppressed) for k in over if self._windows[k].suppressed]
        for k in over:
            del self._windows[k]
        return out


class RateLimitedLog:
    """A logger's methods, each with a ``kind`` first; floods become a summary line."""

    def __init__(self, logger: logging.Logger, rate: LogRate | None = None) -> None:
        self.logger = logger
        self.rate = rate or LogRate()
        _ALL.add(self)

    def log(self, level: int, kind: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Write the line unless its kind is flooding; True when it was written."""
        if not self.logger.isEnabledFor(level):
            return False
        write, closed = self.rate.admit(kind)
        if closed:
            self._summary(level, kind, closed)
        if write:
            self.logger.log(level, msg, *args, exc_info=exc_info)
        return write

    def warning(self, kind: str, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def error(self, kind: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        return self.log(logging.ERROR, kind, msg, *args, exc_info=exc_info)

    def flush(self) -> None:
        """Write the summary of every window that ended with lines suppressed."""
        for kind, count in self.rate.due():
            self._summary(logging.WARNING, kind, count)

    def _summary(self, level: int, kind: str, count: int) -> None:
        self.logger.log(
            level,
            "suppressed %d similar messages (%s; at most %d per %gs are written)",
            count, kind, self.rate.settings.burst, self.rate.settings.interval_s,
        )  # fmt: skip


_ALL: weakref.WeakSet[RateLimitedLog] = weakref.WeakSet()


def flush_all() -> None:
    """``flush`` every limited log of the process (a server calls this once per interval)."""
    for limited in list(_ALL):
        limited.flush()


__all__ = ["LogRate", "RateLimitedLog", "RateSettings", "flush_all"]
