"""Runs ``python -m loom ...`` under cProfile switched on and off by signals.

Benches that want to know where a server spends one operation (not its start-up, nor the
thousand registrations before it) start it through here (``ServerProcess`` does when
``LOOM_SERVER_PROFILE`` names an output file): SIGUSR1 starts a fresh profile of the main
thread (the event loop's), SIGUSR2 stops and writes the stats there (pstats format; each
SIGUSR2 overwrites it with what was profiled since the last SIGUSR1, so one run can profile
two phases apart), and the time the cyclic garbage collector took meanwhile, by generation,
to OUT.gc.json, with how many objects the collector tracks then, by type. Only for
measuring: no test uses it.

Run: python tests/support/profiled.py OUT.pstats server --dev ...
"""

from __future__ import annotations

import cProfile
import gc
import json
import runpy
import signal
import sys
import time
from collections import Counter
from types import FrameType
from typing import Any


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile()
    on = False
    began = 0.0
    gc_s = [0.0, 0.0, 0.0]  # time in the cyclic collector by generation, while profiling
    gc_n = [0, 0, 0]

    def collecting(phase: str, info: dict[str, Any]) -> None:
        nonlocal began
        if not on:
            return
        if phase == "start":
            began = time.perf_counter()
        else:
            gc_s[info["generation"]] += time.perf_counter() - began
            gc_n[info["generation"]] += 1

    def start(_sig: int, _frame: FrameType | None) -> None:
        nonlocal on, profile
        profile = cProfile.Profile()
        gc_s[:], gc_n[:] = [0.0, 0.0, 0.0], [0, 0, 0]
        on = True
        profile.enable()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal on
        on = False
        profile.disable()
        profile.dump_stats(out)
        kinds = Counter(type(o).__qualname__ for o in gc.get_objects())
        with open(out + ".gc.json", "w") as f:
            json.dump({"seconds": gc_s, "collections": gc_n, "tracked": sum(kinds.values()),
                       "tracked_by_type": dict(kinds.most_common(40))}, f)  # fmt: skip

    gc.callbacks.append(collecting)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["loom", *args]
    runpy.run_module("loom", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
