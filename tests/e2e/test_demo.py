"""`loom demo` (what `make demo` runs): the loopback walkthrough end to end, real processes.

The root walkthrough's scenarios are the local-mesh e2e tests (test_local_mesh.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.envoy


def test_the_loopback_demo_walks_through_the_seed_and_cleans_up() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "demo", "--loopback"], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "ok: 'hello world'" in out.stdout
    assert "ok: exit code 52" in out.stdout
    assert "ACLs on with default deny" in out.stdout
    assert "(made a token for static-client's sidecar: service identity static-client)" in out.stdout
    assert out.stdout.rstrip().endswith("Demo complete: every step behaved as the seeds describe.")
    leftover = subprocess.run(["pgrep", "-f", "loom-demo-"], capture_output=True, text=True)
    assert leftover.stdout == ""
