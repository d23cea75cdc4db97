"""Runs ``python -m loom ...`` under cProfile switched on and off by signals.

Benches that want to know where a server spends one operation (not its start-up, nor the
thousand registrations before it) start it through here (``ServerProcess`` does when
``LOOM_SERVER_PROFILE`` names an output file): SIGUSR1 starts profiling the main thread (the
event loop's), SIGUSR2 stops and writes the stats there (pstats format; each SIGUSR2
overwrites it with everything profiled so far). Only for measuring: no test uses it.

Run: python tests/support/profiled.py OUT.pstats server --dev ...
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from types import FrameType


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile()

    def start(_sig: int, _frame: FrameType | None) -> None:
        profile.enable()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["loom", *args]
    runpy.run_module("loom", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
