"""The leak checks of tests/conftest.py, run on small test files in a pytest subprocess: each
leak fails its test with a message naming what leaked, and what fixtures own and release is
not mistaken for a leak."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

# The leaked child waits for EOF on its stdin, a pipe held only by the inner pytest process:
# it exits when that process does, so nothing outlives these tests. It says "up" once it runs,
# so its argv is in /proc when the test ends. HELD keeps the Popen
# objects alive (a collected one would only raise a ResourceWarning, another failure).
LEAKED_CHILD = "leak()"
LEAK = """
HELD = []

def leak():
    code = "print('up', flush=True); import sys; sys.stdin.read()"
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"up\\n"
    HELD.append(p)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytest project using this repository's conftest, settings and support package."""
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makeini(
        f"""
        [pytest]
        pythonpath = {ROOT}
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """
    )
    return pytester


def run(inner: pytest.Pytester, source: str) -> pytest.RunResult:
    inner.makepyfile(test_inner="import asyncio, subprocess, sys\nimport pytest\n" + LEAK + source)
    return inner.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")


def test_a_task_left_pending_fails_the_test_and_is_named_by_its_coroutine(
    inner: pytest.Pytester,
) -> None:
    result = run(inner, """
async def forever():
    await asyncio.Event().wait()

async def test_leaky():
    asyncio.create_task(forever(), name="the-leak")
""")  # fmt: skip
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the test left behind:*", "*task the-leak: forever*"])


def test_a_child_left_running_by_a_sync_test_fails_it_and_is_named_by_its_argv(
    inner: pytest.Pytester,
) -> None:
    result = run(inner, f"""
def test_leaky():
    {LEAKED_CHILD}
""")  # fmt: skip
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the test left behind:*", "*pid *: *python -c print(*up*sys.stdin.read()*"])  # fmt: skip


def test_a_child_that_exited_but_was_never_waited_for_counts_as_a_leak(
    inner: pytest.Pytester,
) -> None:
    result = run(inner, """
def test_leaky():
    p = subprocess.Popen(["true"])
    HELD.append(p)
    import os
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, still unreaped
""")  # fmt: skip
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*[[]true[]] state Z (exited, never waited for)*"])


def test_a_child_left_by_an_async_test_is_named_too(inner: pytest.Pytester) -> None:
    result = run(inner, f"""
async def test_leaky():
    {LEAKED_CHILD}
""")  # fmt: skip
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*pid *: *sys.stdin.read()*"])


def test_tasks_and_processes_that_fixtures_stop_in_their_teardown_are_not_leaks(
    inner: pytest.Pytester,
) -> None:
    result = run(inner, """
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
""")  # fmt: skip
    result.assert_outcomes(passed=2)


def test_a_module_fixture_owns_its_process_for_the_module_and_is_checked_when_it_ends(
    inner: pytest.Pytester,
) -> None:
    result = run(inner, f"""
@pytest.fixture(scope="module")
def held():
    {LEAKED_CHILD}
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
""")  # fmt: skip
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_two*", "*module test_inner.py left behind:*", "*sys.stdin.read()*"])  # fmt: skip
    assert "sleep 30" not in result.stdout.str()
