"""What the benches read of processes (``bench/procs.py``): CPU time split into user and
kernel, the Envoys of a dataplane found as its children, and the sidecars' CPU per request.

Real processes throughout: a child renamed ``envoy`` (``prctl(PR_SET_NAME)``) stands in for a
dataplane's Envoy, since only the command name and the parent are read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.procs import CpuMeter, cpu_seconds, cpu_times, envoys, per_request_us, sidecar_report
from bench.report import REPORT_ENV

_AS_ENVOY = (
    "import ctypes, sys, time\n"
    "ctypes.CDLL(None).prctl(15, b'envoy', 0, 0, 0)\n"  # PR_SET_NAME: /proc/PID/comm
    "print('renamed', flush=True)\n"
    "sys.stdin.readline()\n"  # the test's go
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"  # busy: user time to measure
    "    pass\n"
    "print('spun', flush=True)\n"
    "sys.stdin.read()\n"  # then idle until the test lets go
)


@pytest.fixture
def fake_envoy() -> Iterator[subprocess.Popen[str]]:
    """A child process named ``envoy`` that, given a line, spins for 0.3 s and says so, then
    waits on its stdin."""
    with subprocess.Popen([sys.executable, "-c", _AS_ENVOY, "0.3"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "renamed\n"
            yield proc
        finally:
            proc.kill()  # then the with closes its pipes and reaps it


def test_cpu_time_is_split_into_user_and_kernel() -> None:
    user, system = cpu_times(os.getpid())
    end = time.monotonic() + 0.2  # the monotonic clock is read without a system call
    while time.monotonic() < end:
        pass
    user_after, system_after = cpu_times(os.getpid())
    assert user_after - user >= 0.1  # ticks of 10 ms: 0.2 s of spinning in Python shows
    assert system_after >= system
    assert cpu_seconds(os.getpid()) == pytest.approx(user_after + system_after, abs=0.05)


def test_envoys_are_found_by_parent(fake_envoy: subprocess.Popen[str]) -> None:
    assert envoys(parent=os.getpid()) == [fake_envoy.pid]
    assert fake_envoy.pid in envoys()
    assert envoys(parent=fake_envoy.pid) == []  # it has no children: another parent's none


def test_a_meter_counts_each_group_between_start_and_stop(
    fake_envoy: subprocess.Popen[str],
) -> None:
    meter = CpuMeter({"sidecar": [fake_envoy.pid], "none": []})
    meter.start()
    assert fake_envoy.stdin is not None and fake_envoy.stdout is not None
    fake_envoy.stdin.write("go\n")
    fake_envoy.stdin.flush()
    assert fake_envoy.stdout.readline() == "spun\n"  # its 0.3 s of spinning are over
    used = meter.stop()
    assert used["sidecar"][0] >= 0.1
    assert used["none"] == (0.0, 0.0)
    fake_envoy.kill()
    fake_envoy.wait(10)
    assert meter.stop()["sidecar"] == (0.0, 0.0)  # gone: its last reading is not known


def test_sidecar_cpu_per_request_is_reported_per_side_and_summed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rounds = [{"client": (0.04, 0.06), "server": (0.05, 0.05)},
              {"client": (0.08, 0.12), "server": (0.10, 0.10)}]  # fmt: skip
    per = per_request_us(rounds, [1000, 2000])
    assert per["client"] == [pytest.approx((40.0, 60.0)), pytest.approx((40.0, 60.0))]
    assert per["server"] == [pytest.approx((50.0, 50.0)), pytest.approx((50.0, 50.0))]
    report = tmp_path / "rows.jsonl"
    monkeypatch.setenv(REPORT_ENV, str(report))
    sidecar_report(per, "test")
    out = capsys.readouterr().out
    assert "client 100 us (user 40, kernel 60), server 100 us (user 50, kernel 50)" in out
    (emitted,) = [json.loads(line) for line in report.read_text().splitlines()]
    assert emitted["measure"] == "sidecar CPU per mesh request, both sidecars, test"
    assert emitted["figure"] == "200 us (200..200 over 2 rounds)"
    assert emitted["met"] == "-"
