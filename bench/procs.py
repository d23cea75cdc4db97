"""What the benches read about processes from ``/proc``: CPU time, and which Envoys a mesh runs.

Every bench that puts a server's CPU beside its throughput reads ``/proc/PID/stat``. The
values are the kernel's per-process totals over every thread, in clock ticks (10 ms at the
usual 100 Hz). A figure per request is therefore only as good as the number of ticks behind
it, so the benches measure over thousands of requests.

:class:`CpuMeter` splits that time into user and system (kernel) seconds for named groups of
processes. The mesh benches use it to show what the sidecars themselves cost for each request
they carry: ``envoys`` finds them as the children of a dataplane, or by the network namespace
of a local-mesh pod.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.report import row, spread

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
"""Seconds per clock tick, the unit of ``/proc/PID/stat``'s CPU times."""


def stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: index 0 is field 3 (state), 1 the parent's
    pid, 11 and 12 user and system time (fields 14 and 15 of proc(5))."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds process ``pid`` has used so far (every thread)."""
    fields = stat_fields(pid)
    return int(fields[11]) * TICK_S, int(fields[12]) * TICK_S


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (every thread)."""
    return sum(cpu_times(pid))


def processes(
    comm: str | None = None, parent: int | None = None, netns: str | None = None
) -> list[int]:
    """The pids of running processes, optionally only those whose command name is ``comm``,
    the children of ``parent``, or those in the named network namespace (``ip netns``'s
    ``/run/netns/NAME``)."""
    inode = os.stat(f"/run/netns/{netns}").st_ino if netns is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if comm is not None and (entry / "comm").read_text().strip() != comm:
                continue
            if parent is not None and int(stat_fields(int(entry.name))[1]) != parent:
                continue
            if inode is not None and os.stat(entry / "ns" / "net").st_ino != inode:
                continue
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        found.append(int(entry.name))
    return sorted(found)


def envoys(parent: int | None = None, netns: str | None = None) -> list[int]:
    """The pids of running Envoys (``processes`` named ``envoy``), of ``parent`` or ``netns``."""
    return processes("envoy", parent, netns)


class CpuMeter:
    """User and system CPU seconds that named groups of processes use between ``start()`` and
    ``stop()``. A process gone by ``stop()`` counts for nothing: what it used can no longer be
    read (the benches read their sidecars while these run)."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: tuple(pids) for name, pids in groups.items()}
        self._start: dict[int, tuple[float, float]] = {}

    def start(self) -> None:
        pids = {pid for group in self.groups.values() for pid in group}
        self._start = {pid: self._read(pid, (0.0, 0.0)) for pid in pids}

    def stop(self) -> dict[str, tuple[float, float]]:
        """Per group: (user, system) seconds since ``start()``."""
        used = {}
        for name, pids in self.groups.items():
            user = system = 0.0
            for pid in pids:
                before = self._start.get(pid, (0.0, 0.0))
                now = self._read(pid, before)
                user += now[0] - before[0]
                system += now[1] - before[1]
            used[name] = (user, system)
        return used

    @staticmethod
    def _read(pid: int, otherwise: tuple[float, float]) -> tuple[float, float]:
        try:
            return cpu_times(pid)
        except (OSError, ValueError, IndexError):
            return otherwise


def per_request_us(
    rounds: Sequence[Mapping[str, tuple[float, float]]], requests: Sequence[int]
) -> dict[str, list[tuple[float, float]]]:
    """Per group, each round's (user, system) microseconds per request from ``CpuMeter.stop``
    results and the requests each round carried."""
    out: dict[str, list[tuple[float, float]]] = {}
    for used, count in zip(rounds, requests, strict=True):
        scale = 1e6 / count if count else 0.0
        for name, (user, system) in used.items():
            out.setdefault(name, []).append((user * scale, system * scale))
    return out


def sidecar_report(per: Mapping[str, Sequence[tuple[float, float]]], where: str) -> None:
    """Print the sidecars' CPU per mesh request (``per_request_us`` of their Envoys, by side),
    user and kernel apart, and report both sides' total per round as a row without a goal.

    A round's figure includes the set-up of its connections (16 per side, each with the
    sidecars' mTLS handshake) besides the thousands of requests they carry."""
    if not per:
        return
    totals = [sum(u + k for u, k in sides) for sides in zip(*per.values(), strict=True)]
    parts = []
    for name, sides in per.items():
        user, kernel = (statistics.median(x[j] for x in sides) for j in (0, 1))
        parts.append(f"{name} {statistics.median(u + k for u, k in sides):.0f} us "
                     f"(user {user:.0f}, kernel {kernel:.0f})")  # fmt: skip
    print(f"  sidecar CPU per mesh request, medians of {len(totals)} rounds: " + ", ".join(parts))
    row(f"sidecar CPU per mesh request, both sidecars, {where}", "-",
        spread(totals, ".0f", " us"), None)  # fmt: skip
