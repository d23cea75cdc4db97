"""The rows every bench reports: measure, goal, figure, met? (issue 17, part 6).

A bench calls :func:`row` once per figure it holds against a goal. The row is always printed
(so a bench run by hand reads as before); when ``LOOM_BENCH_REPORT`` names a file, the row is
also appended to it as one JSON line, which is how ``bench/run_all.py`` collects every bench's
rows into one table. :func:`skipped` records a measure that could not be taken (no root, no
Envoy, no dnsperf...) with the reason, so the table says why a figure is missing.

:func:`spread` formats per-round figures the same way everywhere: the median, then the
lowest and highest round, so a reader sees how noisy the machine was.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence

REPORT_ENV = "LOOM_BENCH_REPORT"
"""Environment variable naming the JSON-lines file rows are appended to (unset: print only)."""


def spread(values: Sequence[float], fmt: str = ".1f", unit: str = "") -> str:
    """``"12.3 ms (10.1..15.0 over 5 rounds)"``: the median of per-round figures, lowest..highest."""
    if not values:
        return "no rounds"
    mid = statistics.median(values)
    rounds = f"{len(values)} round" + ("s" if len(values) != 1 else "")
    return f"{mid:{fmt}}{unit} ({min(values):{fmt}}..{max(values):{fmt}} over {rounds})"


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
