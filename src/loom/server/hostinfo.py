"""What ``GET /v1/agent/host`` reports: the server's host, memory, CPUs and disk.

Consul answers with gopsutil's structures (``Host``, ``Memory``, ``CPU``, ``Disk``, in
gopsutil's lower-camel field names), and says the shape is not a stable API. Loom reads the
same facts from Linux's ``/proc`` and ``statvfs`` and fills the fields it can know; a source
it cannot read is named in ``Errors`` (``null`` when all were read) instead of failing the
request, as Consul does. Blocking file reads: call ``collect`` off the event loop.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
PROC = Path("/proc")

_MEMINFO = {
    "total": "MemTotal",
    "available": "MemAvailable",
    "free": "MemFree",
    "buffers": "Buffers",
    "cached": "Cached",
    "shared": "Shmem",
    "slab": "Slab",
    "swapTotal": "SwapTotal",
    "swapFree": "SwapFree",
    "dirty": "Dirty",
    "mapped": "Mapped",
}


def _meminfo(proc: Path) -> Doc:
    kib: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kib[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    out: Doc = {key: kib.get(name, 0) for key, name in _MEMINFO.items()}
    out["used"] = max(out["total"] - out["free"] - out["buffers"] - out["cached"], 0)
    out["usedPercent"] = 100.0 * out["used"] / out["total"] if out["total"] else 0.0
    return out


def _cpus(proc: Path) -> list[Doc]:
    cpus: list[Doc] = []
    for block in (proc / "cpuinfo").read_text().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "processor" not in fields:
            continue
        try:
            mhz = float(fields.get("cpu MHz", "0") or 0)
        except ValueError:
            mhz = 0.0
        cpus.append(
            {
                "cpu": int(fields["processor"]),
                "vendorId": fields.get("vendor_id", ""),
                "family": fields.get("cpu family", ""),
                "model": fields.get("model", ""),
                "physicalId": fields.get("physical id", ""),
                "coreId": fields.get("core id", fields["processor"]),
                "cores": 1,
                "modelName": fields.get("model name", ""),
                "mhz": mhz,
                "flags": fields.get("flags", fields.get("Features", "")).split(),
                "microcode": fields.get("microcode", ""),
            }
        )
    return cpus


def _os_release() -> dict[str, str]:
    for path in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        if path.exists():
            out = {}
            for line in path.read_text().splitlines():
                key, _, value = line.partition("=")
                out[key] = value.strip().strip('"')
            return out
    return {}


def _host(proc: Path, now: float) -> Doc:
    uptime = float((proc / "uptime").read_text().split()[0])
    release = _os_release()
    uname = platform.uname()
    return {
        "hostname": socket.gethostname(),
        "uptime": int(uptime),
        "bootTime": int(now - uptime),
        "procs": sum(1 for p in proc.iterdir() if p.name.isdigit()),
        "os": uname.system.lower(),
        "platform": release.get("ID", ""),
        "platformFamily": release.get("ID_LIKE", release.get("ID", "")),
        "platformVersion": release.get("VERSION_ID", ""),
        "kernelVersion": uname.release,
        "kernelArch": uname.machine,
        "virtualizationSystem": "",
        "virtualizationRole": "",
        "hostId": _machine_id(),
    }


def _machine_id() -> str:
    path = Path("/etc/machine-id")
    return path.read_text().strip() if path.exists() else ""


def _disk(path: Path) -> Doc:
    st = os.statvfs(path)
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    used = total - st.f_bfree * st.f_frsize
    inodes_used = st.f_files - st.f_ffree
    return {
        "path": str(path),
        "fstype": "",
        "total": total,
        "free": free,
        "used": used,
        "usedPercent": 100.0 * used / (used + free) if used + free else 0.0,
        "inodesTotal": st.f_files,
        "inodesUsed": inodes_used,
        "inodesFree": st.f_ffree,
        "inodesUsedPercent": 100.0 * inodes_used / st.f_files if st.f_files else 0.0,
    }


def collect(disk_path: Path, proc: Path = PROC) -> Doc:
    """The host report; ``disk_path`` is the file system measured (the data dir's, or /)."""
    now = time.time()
    errors: list[str] = []
    out: Doc = {}
    parts: tuple[tuple[str, Any], ...] = (
        ("Memory", lambda: _meminfo(proc)),
        ("CPU", lambda: _cpus(proc)),
        ("Host", lambda: _host(proc, now)),
        ("Disk", lambda: _disk(disk_path)),
    )
    for key, read in parts:
        try:
            out[key] = read()
        except (OSError, ValueError, IndexError) as exc:
            out[key] = None
            errors.append(f"{key}: {exc}")
    out["CollectionTime"] = time.time_ns()
    out["Errors"] = errors or None
    return out


__all__ = ["collect"]
