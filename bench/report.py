"""The rows every bench reports: measure, goal, figure, met? (issue 17, part 6).

A bench calls :func:`row` once per figure it holds against a goal. The row is always printed
(so a bench run by hand reads as before); when ``LOOM_BENCH_REPORT`` names a file, the row is
also appended to it as one JSON line, which is how ``bench/run_all.py`` collects every bench's
rows into one table. :func:`skipped` records a measure that could not be taken (no root, no
Envoy, no dnsperf...) with the reason, so the table says why a figure is missing.

:func:`spread` formats per-round figures the same way everywhere: the median, then the
lowest and highest round, so a reader sees how noisy the machine was.

These machines are virtual and shared: the hypervisor runs other guests on the same cores and
takes ours away for milliseconds at a time, which the guest sees as *steal* time in
``/proc/stat``. A latency tail measures those stalls before anything of ours (the mesh's
added p99 over 8 paired rounds followed the host's steal: +0.3..+0.5 ms in runs it stole
under 1% of the CPU time, +1.6..+2.7 ms in runs it stole 8-18%). :class:`Steal` measures it
per round, and :func:`verdict` holds a latency goal against the rounds the host left alone
(:data:`QUIET_STEAL_PCT`), when there are enough of them, printing all rounds beside them.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence

REPORT_ENV = "LOOM_BENCH_REPORT"
"""Environment variable naming the JSON-lines file rows are appended to (unset: print only)."""


def spread(values: Sequence[float], fmt: str = ".1f", unit: str = "", kind: str = "") -> str:
    """``"12.3 ms (10.1..15.0 over 5 rounds)"``: the median of per-round figures, lowest..highest
    (``kind``: a word before "rounds", as in "over 5 quiet rounds")."""
    if not values:
        return "no rounds"
    rounds = f"{len(values)} {kind + ' ' if kind else ''}round" + ("s" if len(values) != 1 else "")
    return _median_range(values, fmt, unit, f" over {rounds}")


def _median_range(values: Sequence[float], fmt: str, unit: str, tail: str = "") -> str:
    """``"12.3 ms (10.1..15.0)"``, ``tail`` inside the parenthesis after the range."""
    mid = statistics.median(values)
    return f"{mid:{fmt}}{unit} ({min(values):{fmt}}..{max(values):{fmt}}{tail})"


QUIET_STEAL_PCT = 1.0
"""A round in which the hypervisor took less than this share of the CPU time is *quiet*."""


def _cpu_times() -> tuple[int, int]:
    """(steal, total) jiffies over all CPUs since boot; (0, 0) without ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7], sum(fields)) if len(fields) == 8 else (0, 0)


class Steal:
    """The share of the CPU time the hypervisor took since this was made: ``stolen = Steal()``,
    the work, then ``stolen.pct()`` (0.0 on a machine that reports no steal)."""

    def __init__(self) -> None:
        self._start = _cpu_times()

    def pct(self) -> float:
        steal, total = _cpu_times()
        elapsed = total - self._start[1]
        return 100.0 * (steal - self._start[0]) / elapsed if elapsed > 0 else 0.0


def verdict(
    values: Sequence[float], steals: Sequence[float], fmt: str, unit: str,
    met: Callable[[Sequence[float]], bool],
) -> tuple[str, bool]:
    """The figure and verdict of per-round ``values`` measured while the host stole ``steals``
    percent of the CPU time. ``met`` judges the quiet rounds when at least half of them (and
    3) are quiet, all rounds otherwise; the figure shows both, and the steal."""
    if not values:
        return "no rounds", False
    quiet = [v for v, s in zip(values, steals, strict=True) if s < QUIET_STEAL_PCT]
    stolen = f"host steal {statistics.median(steals):.1f}% ({min(steals):.1f}..{max(steals):.1f})"
    if len(quiet) >= max(3, (len(values) + 1) // 2):
        judged, every = spread(quiet, fmt, unit, "quiet"), _median_range(values, fmt, unit)
        return f"{judged}; all {len(values)}: {every}; {stolen}", met(quiet)
    return f"{spread(values, fmt, unit)}, {len(quiet)} quiet; {stolen}", met(values)


def _emit(record: dict[str, object]) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


def row(measure: str, goal: str, figure: str, met: bool | None, note: str = "") -> None:
    """Print one measure with its goal and figure; ``met`` None when there is no verdict."""
    verdict = "-" if met is None else ("yes" if met else "no")
    extra = f"  [{note}]" if note else ""
    print(f"RESULT {measure}: {figure} (goal {goal}) met? {verdict}{extra}", flush=True)
    _emit({"measure": measure, "goal": goal, "figure": figure, "met": verdict, "note": note})


def skipped(measure: str, goal: str, reason: str) -> None:
    """Record a measure this run could not take, and why."""
    print(f"RESULT {measure}: skipped, {reason} (goal {goal})", flush=True)
    _emit({"measure": measure, "goal": goal, "figure": f"skipped: {reason}", "met": "skip",
           "note": ""})  # fmt: skip
