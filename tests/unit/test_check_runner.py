"""The check runner reports what moved, and only that: driven in-process by an alias check
whose target's health the test sets (no sockets), waiting on each report or probe."""

from __future__ import annotations

import asyncio

from loom.domain.checks import ALIAS, CheckDefinition
from loom.domain.records import Check
from loom.health.probes import Result
from loom.health.runner import CheckRunner

ALIASED = CheckDefinition(ALIAS, alias_service="web")


class Target:
    def __init__(self) -> None:
        self.result = Result("passing", "ok")
        self.reports: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.runs = 0
        self.ran = asyncio.Event()

    async def alias(self, check: Check, d: CheckDefinition) -> Result:
        self.runs += 1
        self.ran.set()
        return self.result

    async def report(self, check_id: str, status: str, output: str) -> None:
        await self.reports.put((check_id, status, output))

    async def runs_past(self, n: int) -> None:
        while self.runs < n:
            self.ran.clear()
            await asyncio.wait_for(self.ran.wait(), 5)


def runner(t: Target, **kw: float) -> CheckRunner:
    return CheckRunner(t.report, t.alias, alias_poll_s=0.01, max_stagger_s=0.0, **kw)


def check(cid: str = "c", d: CheckDefinition = ALIASED) -> Check:
    return Check("n", cid, cid, "critical", definition=d, managed=True)


async def test_status_changes_are_reported_and_a_steady_check_writes_nothing() -> None:
    t = Target()
    r = runner(t)
    r.sync([check()])
    try:
        assert await asyncio.wait_for(t.reports.get(), 5) == ("c", "passing", "ok")
        await t.runs_past(t.runs + 5)
        assert t.reports.empty()
        t.result = Result("critical", "down")
        assert await asyncio.wait_for(t.reports.get(), 5) == ("c", "critical", "down")
    finally:
        await r.close()


async def test_an_output_change_alone_waits_for_the_output_sync_interval() -> None:
    t = Target()
    r = runner(t, output_sync_s=3600.0)
    r.sync([check()])
    try:
        await asyncio.wait_for(t.reports.get(), 5)
        t.result = Result("passing", "ok, but the body has a new timestamp")
        await t.runs_past(t.runs + 5)
        assert t.reports.empty()
    finally:
        await r.close()
    t2 = Target()
    r = runner(t2, output_sync_s=0.0)
    r.sync([check()])
    try:
        await asyncio.wait_for(t2.reports.get(), 5)
        t2.result = Result("passing", "new")
        assert await asyncio.wait_for(t2.reports.get(), 5) == ("c", "passing", "new")
    finally:
        await r.close()


async def test_the_gates_word_is_reported_at_once_and_replaces_the_probe() -> None:
    t = Target()
    said: list[Result | None] = [Result("critical", "Envoy is starting")]
    r = CheckRunner(t.report, t.alias, gate=lambda c: said[0], alias_poll_s=0.01,
                    max_stagger_s=0.0, output_sync_s=3600.0)  # fmt: skip
    r.sync([check()])
    try:
        assert await asyncio.wait_for(t.reports.get(), 5) == ("c", "critical", "Envoy is starting")
        said[0] = Result("critical", "Envoy rejected listener x: Address already in use")
        r.kick()
        got = await asyncio.wait_for(t.reports.get(), 5)
        assert got[2].startswith("Envoy rejected listener")
        assert t.runs == 0  # the probe never ran while the gate answered
        said[0] = None
        assert await asyncio.wait_for(t.reports.get(), 5) == ("c", "passing", "ok")
    finally:
        await r.close()


async def test_sync_stops_removed_checks_and_restarts_changed_ones() -> None:
    t = Target()
    r = runner(t)
    r.sync([check("a"), check("b")])
    try:
        assert r.running == ["a", "b"]
        r.sync([check("b", CheckDefinition(ALIAS, alias_service="other"))])
        assert r.running == ["b"]
        # "a" was stopped before its first run: the one report is the new "b"'s.
        assert (await asyncio.wait_for(t.reports.get(), 5))[0] == "b"
    finally:
        await r.close()
    assert r.running == []


async def test_a_failed_report_is_retried_on_the_next_run() -> None:
    t = Target()
    failed: list[int] = []

    async def flaky(check_id: str, status: str, output: str) -> None:
        if not failed:
            failed.append(1)
            raise OSError("server away")
        await t.reports.put((check_id, status, output))

    r = CheckRunner(flaky, t.alias, alias_poll_s=0.01, max_stagger_s=0.0)
    r.sync([check()])
    try:
        assert await asyncio.wait_for(t.reports.get(), 5) == ("c", "passing", "ok")
        assert failed == [1]
    finally:
        await r.close()


async def test_states_hold_what_was_decided_even_before_its_report_is_written() -> None:
    t = Target()
    failing: list[bool] = [True]

    async def away(check_id: str, status: str, output: str) -> None:
        if failing[0]:
            raise OSError("server away")
        await t.reports.put((check_id, status, output))

    r = CheckRunner(away, t.alias, alias_poll_s=0.01, max_stagger_s=0.0, output_sync_s=3600.0)
    assert r.states() == {}
    r.sync([check("a"), check("b")])
    try:
        await t.runs_past(4)
        # no report got through, yet the heartbeat would carry both results
        assert r.states() == {"a": ("passing", "ok"), "b": ("passing", "ok")}
        failing[0] = False
        await asyncio.wait_for(t.reports.get(), 5)
        t.result = Result("passing", "a new body")
        await t.runs_past(t.runs + 4)
        # an output change held back by output_sync_s is not in the states either
        assert r.states()["a"] == ("passing", "ok")
        r.sync([check("b")])
        assert r.states() == {"b": ("passing", "ok")}
    finally:
        await r.close()
