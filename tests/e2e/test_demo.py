"""`loom demo` (what `make demo` runs): the loopback walkthrough and, as root, the one that
applies the examples, end to end with real processes.

The scenarios in detail are the local-mesh e2e tests (test_local_mesh.py, test_local_apply.py)."""

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


@pytest.mark.root
def test_the_root_demo_applies_the_examples_and_gets_the_seeds_answers() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "demo"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "loom local apply -f " in out.stdout and "examples/static-server.yaml" in out.stdout
    assert "      consul.hashicorp.com/connect-inject-status: injected" in out.stdout
    assert "ok: '\"hello world\"'" in out.stdout
    assert "command terminated with exit code 52\n    ok: exit code 52" in out.stdout
    assert "ok: '\"hello world from 9090\"'" in out.stdout
    assert "deployment.apps/static-client configured" in out.stdout
    assert out.stdout.rstrip().endswith("Demo complete: every step behaved as the seeds describe.")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in netns.split() if n.startswith("ldemo-")]
