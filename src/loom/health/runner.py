"""The loop that runs the checks a runner owns, at their intervals, and reports what moved.

One ``CheckRunner`` per process that runs checks (the server, each dataplane). ``sync`` is
told the checks the process owns now (``loom.domain.checkstate.check_runner`` decides which)
and starts, restarts (a changed definition) or stops one task per check. Each task probes at
the check's interval, passes the result through Consul's thresholds (``Counters.step``) and
calls ``report(check_id, status, output)`` when the status changed; a change of the output
alone is reported at most every ``output_sync_s`` (Consul's ``check_update_interval``, 5
minutes: an HTTP body with a timestamp would otherwise be a write, and an xDS round, per
probe), so an unchanged check costs no write; a task's first result is reported at once.
The first run comes after a random stagger of at most a second (Consul staggers over the
whole interval; a sidecar's checks would then keep it out of the mesh for up to 10 s after it
starts). Alias checks have no interval: they re-read their target every ``alias_poll_s``.
The gate's answers (below) are reported at once, output included.

``states()`` is what the runner last decided for each check (status and the output reported
with it), set before the report is sent: a dataplane's heartbeat carries it, so the server can
restore a check it overwrote, or mend a report that was lost.

``gate(check)`` may answer for a check instead of its probe (the dataplane's "Connect Sidecar
Listening" is critical with Envoy's reason while a listener is rejected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

from loom.domain.checks import ALIAS, CheckDefinition
from loom.domain.checkstate import Counters
from loom.domain.records import Check
from loom.health.probes import Result, probe
from loom.ratelog import RateLimitedLog

log = logging.getLogger("loom.health")
failures = RateLimitedLog(log)

Report = Callable[[str, str, str], Awaitable[None]]
"""``report(check_id, status, output)``: write the check's new state."""
Alias = Callable[[Check, CheckDefinition], Awaitable[Result]]
"""The current health of an alias check's target."""
Gate = Callable[[Check], Result | None]
"""An answer that replaces the probe for this run (None: probe as defined)."""


class CheckRunner:
    def __init__(
        self,
        report: Report,
        alias: Alias,
        gate: Gate | None = None,
        alias_poll_s: float = 1.0,
        max_stagger_s: float = 1.0,
        output_sync_s: float = 300.0,
    ) -> None:
        self._report = report
        self._alias = alias
        self._gate = gate
        self.alias_poll_s = alias_poll_s
        self.max_stagger_s = max_stagger_s
        self.output_sync_s = output_sync_s
        self._tasks: dict[str, tuple[CheckDefinition, asyncio.Task[None]]] = {}
        self._states: dict[str, tuple[str, str]] = {}
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Run every check now (e.g. the gate's answer changed), then at their intervals."""
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    @property
    def running(self) -> list[str]:
        return sorted(self._tasks)

    def states(self) -> dict[str, tuple[str, str]]:
        """(status, output) of each running check that has a result, as last decided."""
        return {cid: self._states[cid] for cid in sorted(self._tasks) if cid in self._states}

    def sync(self, checks: Iterable[Check]) -> None:
        """Run exactly ``checks`` (each with a definition) from now on."""
        wanted = {c.check_id: c for c in checks if c.definition is not None}
        for cid in sorted(set(self._tasks) - set(wanted)):
            self._tasks.pop(cid)[1].cancel()
            self._states.pop(cid, None)
        for cid, check in sorted(wanted.items()):
            assert check.definition is not None
            current = self._tasks.get(cid)
            if current is not None and current[0] == check.definition:
                continue
            if current is not None:
                current[1].cancel()
                self._states.pop(cid, None)
            task = asyncio.create_task(self._run(check, check.definition), name=f"check {cid}")
            self._tasks[cid] = (check.definition, task)

    async def close(self) -> None:
        tasks = [t for _, t in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _once(self, check: Check, d: CheckDefinition) -> tuple[Result, bool]:
        """One result, and whether it comes from the gate (whose word is always reported)."""
        gated = self._gate(check) if self._gate is not None else None
        if gated is not None:
            return gated, True
        if d.kind == ALIAS:
            return await self._alias(check, d), False
        return await probe(d), False

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run(self, check: Check, d: CheckDefinition) -> None:
        loop = asyncio.get_running_loop()
        counters = Counters()
        status, output = check.status, check.output
        pending = False  # a report that failed is retried on the next run
        reported = float("-inf")  # the first result's output is reported at once
        interval = d.interval_s or self.alias_poll_s
        await self._pause(random.uniform(0.0, min(interval, self.max_stagger_s)))
        while True:
            try:
                result, urgent = await self._once(check, d)
            except Exception:  # a probe is written never to raise: keep the check running
                failures.error("check crash", "check %s failed to run", check.check_id,
                               exc_info=True)  # fmt: skip
                result, urgent = Result("critical", "the check failed to run (see the log)"), False
            counters, moved = counters.step(d, result.status)
            due = (
                moved != status
                or pending
                or (result.output != output
                    and (urgent or loop.time() - reported >= self.output_sync_s))
            )  # fmt: skip
            if moved is not None and due:
                self._states[check.check_id] = (moved, result.output)
                try:
                    await self._report(check.check_id, moved, result.output)
                except Exception as exc:
                    failures.warning("check report", "cannot report check %s: %s",
                                     check.check_id, exc)  # fmt: skip
                    pending = True
                else:
                    status, output, pending = moved, result.output, False
                    reported = loop.time()
            await self._pause(interval)
