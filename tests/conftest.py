"""Shared test machinery: the golden-file flag, markers for root/Envoy tests, and the leak
checks every test runs under."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from pytest_asyncio import is_async_test

from tests.support.leaks import (
    child_processes,
    forget_handed_over,
    leak_report,
    leaked_processes,
    pending_tasks,
)

GOLDEN_DIR = Path(__file__).parent / "golden"

# Property tests and fuzzers draw the same examples on every run (a seed per test), so the
# suite passes or fails the same way on every machine; set LOOM_HYPOTHESIS_RANDOM=1 to explore
# new examples (the longer fuzz runs in bench/ do).
hypothesis_settings.register_profile("loom", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile("explore" if os.environ.get("LOOM_HYPOTHESIS_RANDOM") else "loom")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing",
    )


class Golden:
    """Compares text against ``tests/golden/<name>``; rewrites it under --update-golden."""

    def __init__(self, update: bool) -> None:
        self.update = update

    def check(self, name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if self.update or not path.exists():
            if not self.update:
                pytest.fail(f"golden file {path} missing: run pytest --update-golden")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        expected = path.read_text()
        assert text == expected, f"output differs from {path} (refresh with --update-golden)"


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    return Golden(bool(request.config.getoption("--update-golden")))


def root_and_iptables_reason() -> str | None:
    """Why root-only tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables-restore", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iptables iproute2 util-linux)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = root_and_iptables_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def loom_server():  # type: ignore[no-untyped-def]
    """A real `loom server --dev` process on random ports; stopped after the test."""
    from tests.support.server import start_server

    server = start_server()
    yield server
    server.stop()


# -- leaks ------------------------------------------------------------------------------------
#
# Order of teardown, which is what makes these checks fair (pytest-asyncio 1.5, function loop):
#   1. the test's sync function fixtures (set up after ``no_leaks``, so torn down before it);
#   2. ``no_leaks`` itself;
#   3. the function-scoped asyncio runner, which first finalises the async fixtures registered
#      on it, newest first, so ``_no_leaks_on_the_loop`` (registered before any of the test's
#      own, from inside ``no_leaks``) runs after them all and before the runner closes the loop
#      (closing would silently cancel whatever is still pending).
# Module-scoped fixtures are set up before any function fixture of the test that first needs
# them and torn down after the module's last test, so the function-level check never sees
# their processes; ``no_leaks_in_the_module`` checks those when the module is done.


TASK_GRACE_S = 1.0
"""How long tasks still pending after the test may take to end by themselves before they count
as leaked: a library may finish a cancelled call a few loop turns (and a thread hop) later.
Returns as soon as they are done; a real leak costs the failing test this long, once."""

_REPORTED = pytest.StashKey[set[int]]()


def _reported(request: pytest.FixtureRequest) -> set[int]:
    """Pids already reported as leaked in this session (each leak fails one test only)."""
    return request.config.stash.setdefault(_REPORTED, set())


@pytest.fixture
async def _no_leaks_on_the_loop(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """For async tests: tasks still pending and children not reaped once every other fixture
    of the test is torn down, just before the test's event loop is closed."""
    before = child_processes()
    yield
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:  # let tasks that are ending anyway end (grpc finishing a call it cancelled)
        await asyncio.wait(others, timeout=TASK_GRACE_S)
    leaks = pending_tasks(asyncio.get_running_loop()) + leaked_processes(before, _reported(request))
    if leaks:
        pytest.fail(leak_report("the test", leaks), pytrace=False)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails a test that leaves asyncio tasks pending on its loop or child processes of the
    pytest process behind (running, or exited and never waited for), naming each one (task
    name and coroutine, pid and argv).

    Processes are compared with the children present when the test's function fixtures start,
    so processes of module-scoped fixtures (already running then) are exempt here and checked
    when the module ends; so are processes a test hands over to such a fixture with
    ``tests.support.leaks.hand_over``. No session-scoped fixture owns processes today; one
    that did would need the same hand-over (or a session-level check). Only direct children
    are seen: a grandchild whose parent was reaped is adopted by init, outside this check.
    Tasks are checked on function-scoped event loops (the project's only kind), after
    ``TASK_GRACE_S`` for those already ending.
    """
    if is_async_test(request.node):
        request.getfixturevalue("_no_leaks_on_the_loop")  # checks after the async fixtures
        yield
        return
    before = child_processes()
    yield
    leaks = leaked_processes(before, _reported(request))
    if leaks:
        pytest.fail(leak_report("the test", leaks), pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def no_leaks_in_the_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the module (at its last test's teardown) when its module-scoped fixtures leave
    child processes behind. Set up before the module's other module fixtures (autouse comes
    first within a scope) and so torn down after them."""
    before = child_processes()
    yield
    leaks = leaked_processes(before, _reported(request), test=False)
    forget_handed_over()
    if leaks:
        pytest.fail(leak_report(f"module {request.node.name}", leaks), pytrace=False)
