"""The server's check runner: the checks registered directly with it, run where it runs.

The server runs the HTTP, TCP, gRPC, H2PING, alias and script checks of its own node that no
dataplane owns (``loom.domain.checkstate.check_runner``: a sidecar's checks, and those of an
instance with a sidecar, belong to that sidecar's ``loom dataplane``). It follows the checks
and services tables (a blocking wait on the store), so a registered check starts within a
moment and a removed one stops. Results are written like any check update, and the same loop
reaps services whose check stayed critical past ``DeregisterCriticalServiceAfter``.

``run_liveness`` turns critical the checks of a dataplane that has missed its heartbeat
deadline (``loom.domain.liveness``; the dataplane's heartbeat brings them back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from loom.control.errors import ControlError
from loom.control.state import State
from loom.domain.checks import CheckDefinition
from loom.domain.records import Check
from loom.errors import LoomError
from loom.health.probes import Result
from loom.health.runner import CheckRunner
from loom.store.tables import CHECKS, SERVICES

log = logging.getLogger("loom.server.checks")
REAP_EVERY_S = 5.0
"""How often the loop looks for services to reap when nothing changes."""


def server_runner(state: State) -> CheckRunner:
    async def report(check_id: str, status: str, output: str) -> None:
        with contextlib.suppress(ControlError):  # deregistered meanwhile: nothing to write
            await state.catalog.update_check(check_id, status, output)

    async def alias(check: Check, d: CheckDefinition) -> Result:
        status, output = state.agent_checks.alias(check, d.alias_service, d.alias_node)
        return Result(status, output)

    return CheckRunner(report, alias)


async def run_server_checks(state: State) -> None:
    """Run until cancelled."""
    runner = server_runner(state)
    index = 0
    try:
        while True:
            runner.sync(state.agent_checks.server_owned())
            for service_id in state.agent_checks.due_for_reaping():
                log.warning("deregistering service %s: critical past its "
                            "DeregisterCriticalServiceAfter", service_id)  # fmt: skip
                try:
                    await state.catalog.agent_deregister(service_id)
                except LoomError as exc:
                    log.error("cannot deregister %s: %s", service_id, exc)
            index = await state.store.wait((CHECKS.name, SERVICES.name), index, REAP_EVERY_S)
    finally:
        await runner.close()


async def run_liveness(state: State) -> None:
    """Every ``ttl_sweep_s``, turn critical the checks of dataplanes gone silent; until
    cancelled."""
    if state.settings.dataplane_deadline_s <= 0:
        return
    while True:
        await asyncio.sleep(state.settings.ttl_sweep_s)
        try:
            for check, output in await state.agent_checks.mark_gone():
                log.warning("check %s: %s", check.check_id, output)
        except LoomError as exc:
            log.error("dataplane liveness sweep failed: %s", exc)
