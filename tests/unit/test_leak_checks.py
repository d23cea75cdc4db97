"""The leak checks of tests/conftest.py, run once on a small project of leaky and tidy tests in
a pytest subprocess: each leak fails its test with a message naming what leaked, and what
fixtures own and release is not mistaken for a leak."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The leaked child says "up" once it runs (so its argv is in /proc when the test ends), then
# waits for EOF on its stdin, a pipe held only by the inner pytest process: it exits when that
# process does, so nothing outlives these tests. HELD keeps the Popen objects alive (one
# collected would raise a ResourceWarning, another failure).
PRELUDE = """
import asyncio, os, subprocess, sys
import pytest

HELD = []

def leak():
    code = "print('up', flush=True); import sys; sys.stdin.read()"
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"up\\n"
    HELD.append(p)
"""

MODULES = {
    "test_task": """
async def forever():
    await asyncio.Event().wait()

async def test_leaky():
    asyncio.create_task(forever(), name="the-leak")
""",
    "test_sync_child": """
def test_leaky():
    leak()
""",
    "test_zombie": """
def test_leaky():
    p = subprocess.Popen(["true"])
    HELD.append(p)
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, still unreaped
""",
    "test_async_child": """
async def test_leaky():
    leak()
""",
    "test_tidy": """
@pytest.fixture
async def background():
    task = asyncio.create_task(asyncio.Event().wait())
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    yield
    task.cancel()
    proc.kill()
    await proc.wait()

@pytest.fixture
def child():
    p = subprocess.Popen(["sleep", "30"])
    yield
    p.kill()
    p.wait()

async def test_async_uses_both(background, child):
    pass

def test_sync_uses_one(child):
    pass
""",
    "test_module": """
@pytest.fixture(scope="module")
def held():
    leak()
    yield

@pytest.fixture(scope="module")
def released():
    p = subprocess.Popen(["sleep", "30"])
    yield
    p.kill()
    p.wait()

def test_one(held, released):
    pass

def test_two(held, released):
    pass
""",
}


Outcomes = dict[str, tuple[str, str]]
"""Test id (``module::name``) -> (passed/failed/error, the failure or error text)."""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    """Runs the inner project with this repository's conftest, settings and support package."""
    work = tmp_path_factory.mktemp("leaks")
    (work / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (work / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    for name, body in MODULES.items():
        (work / f"{name}.py").write_text(PRELUDE + textwrap.dedent(body))
    report = work / "report.xml"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
         f"--junitxml={report}", "-q"],
        cwd=work, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    found: Outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        for tag in ("error", "failure"):
            if (node := case.find(tag)) is not None:
                text = f"{found[key][1]}\n" if key in found else ""
                found[key] = ("error" if tag == "error" else "failed", text + (node.text or ""))
        found.setdefault(key, ("passed", ""))
    return found


def test_a_task_left_pending_fails_the_test_and_is_named_by_its_coroutine(
    outcomes: Outcomes,
) -> None:
    outcome, text = outcomes["test_task::test_leaky"]
    assert outcome == "error" and "the test left behind:" in text
    assert "task the-leak: forever" in text


def test_a_child_left_running_by_a_sync_test_fails_it_and_is_named_by_its_argv(
    outcomes: Outcomes,
) -> None:
    outcome, text = outcomes["test_sync_child::test_leaky"]
    assert outcome == "error" and "the test left behind:" in text
    assert "python -c print('up', flush=True); import sys; sys.stdin.read()" in text


def test_a_child_that_exited_but_was_never_waited_for_counts_as_a_leak(
    outcomes: Outcomes,
) -> None:
    outcome, text = outcomes["test_zombie::test_leaky"]
    assert outcome == "error" and "[true] state Z (exited, never waited for)" in text


def test_a_child_left_by_an_async_test_is_named_too(outcomes: Outcomes) -> None:
    outcome, text = outcomes["test_async_child::test_leaky"]
    assert outcome == "error" and "sys.stdin.read()" in text


def test_tasks_and_processes_that_fixtures_stop_in_their_teardown_are_not_leaks(
    outcomes: Outcomes,
) -> None:
    assert outcomes["test_tidy::test_async_uses_both"] == ("passed", "")
    assert outcomes["test_tidy::test_sync_uses_one"] == ("passed", "")


def test_a_module_fixture_owns_its_process_for_the_module_and_is_checked_when_it_ends(
    outcomes: Outcomes,
) -> None:
    assert outcomes["test_module::test_one"] == ("passed", "")
    outcome, text = outcomes["test_module::test_two"]  # the module's end: its last teardown
    assert outcome == "error" and "module test_module.py left behind:" in text
    assert "sys.stdin.read()" in text and "sleep 30" not in text
