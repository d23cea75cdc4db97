"""What a check's results mean: thresholds, alias health, who runs a check, what reaps.

Pure decisions shared by both runners (the server's and the dataplane's), so they decide
alike and are tested without a clock or a socket:

- ``Counters.step``: Consul's ``StatusHandler``. A passing (or warning) result counts toward
  ``SuccessBeforePassing`` and clears the failures; a critical one counts toward
  ``FailuresBeforeWarning`` (reported as warning) and ``FailuresBeforeCritical``, and clears
  the successes. Until a threshold is reached the reported status stays what it was.
- ``alias_result``: Consul's alias check: the worst of the aliased instance's checks (and its
  node's), passing with "No checks found." when it has none, critical when it is not there.
- ``check_runner``: who runs a check that Loom runs. A check of a sidecar, or of an instance
  that has a sidecar on its node, belongs to that sidecar's ``loom dataplane`` (next to the
  workload); any other check registered through the agent API is run by the server. A
  catalog check is never run (Consul's catalog stores checks, its agents run them). Both
  runners apply this one function, so a check never runs in two places.
- ``aggregate``: the agent's health of an instance (``/v1/agent/health/service/*``), where a
  maintenance check outranks every other status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loom.domain.checks import MAINTENANCE, CheckDefinition
from loom.domain.records import Check, Instance

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
MAINT_STATUS = "maintenance"
SERVER, DATAPLANE, NOBODY = "server", "dataplane", ""
DEREGISTER_MIN_S = 60.0
"""Consul's floor for ``DeregisterCriticalServiceAfter``."""


@dataclass(frozen=True)
class Counters:
    """Consecutive results of one check since its status last moved."""

    successes: int = 0
    failures: int = 0

    def step(self, d: CheckDefinition, status: str) -> tuple[Counters, str | None]:
        """The counters after one probe result, and the status to report (None: keep the
        current one, a threshold is not reached yet)."""
        if status in (PASSING, WARNING):
            after = Counters(self.successes + 1, 0)
            return after, status if after.successes >= d.success_before_passing else None
        after = Counters(0, self.failures + 1)
        if after.failures >= d.failures_before_critical:
            return after, CRITICAL
        if after.failures >= d.failures_before_warning:
            return after, WARNING
        return after, None


def alias_result(
    target: str, node: str, exists: bool, checks: Iterable[Check]
) -> tuple[str, str]:
    """Status and output of an alias of instance ``target`` on ``node``, given whether the
    instance exists and its checks plus its node's."""
    status, output = PASSING, "No checks found."
    for c in checks:
        if c.status in (CRITICAL, WARNING):
            if status != CRITICAL:
                status, output = c.status, f"Aliased check {c.name!r} failing: {c.output}"
            if c.status == CRITICAL:
                break
        elif status == PASSING:
            output = "All checks passing."
    if not exists:
        return CRITICAL, f"Service {target} could not be found on node {node}"
    return status, output


def sidecars_by_destination(instances: Iterable[Instance]) -> dict[tuple[str, str, str], str]:
    """(node, namespace, destination instance ID) -> the ID of the sidecar proxying it (the
    lowest ID when there are several)."""
    out: dict[tuple[str, str, str], str] = {}
    for inst in instances:
        if inst.proxy is None:
            continue
        key = (inst.node, inst.namespace, inst.proxy.destination_service_id)
        if key not in out or inst.id < out[key]:
            out[key] = inst.id
    return out


def check_runner(
    check: Check, proxies: dict[str, Instance], sidecars: dict[tuple[str, str, str], str]
) -> tuple[str, str]:
    """Who runs ``check``: (SERVER, "") or (DATAPLANE, the sidecar's ID) or (NOBODY, "").

    ``proxies``: the connect-proxy instances of the check's node by ID; ``sidecars``: from
    ``sidecars_by_destination``."""
    if not check.managed or check.definition is None or not check.definition.runnable:
        return NOBODY, ""
    if check.service_id in proxies:
        return DATAPLANE, check.service_id
    side = sidecars.get((check.node, check.namespace, check.service_id))
    if check.service_id and side is not None:
        return DATAPLANE, side
    return SERVER, ""


def aggregate(checks: Iterable[Check]) -> str:
    """The agent's aggregated status: maintenance, then critical, warning, passing."""
    statuses = set()
    for c in checks:
        if c.type == MAINTENANCE:
            return MAINT_STATUS
        statuses.add(c.status)
    for status in (CRITICAL, WARNING):
        if status in statuses:
            return status
    return PASSING


HTTP_CODE = {PASSING: 200, WARNING: 429, CRITICAL: 503, MAINT_STATUS: 503}
"""``/v1/agent/health/service/*``: the status code of each aggregated status (Consul's)."""


def worst(statuses: Iterable[str]) -> str:
    """The worst of several aggregated statuses (by name: Consul answers the worst code)."""
    found = set(statuses)
    for status in (MAINT_STATUS, CRITICAL, WARNING):
        if status in found:
            return status
    return PASSING


def reap_due(critical_since: float | None, d: CheckDefinition | None, now: float) -> bool:
    """Whether a check critical since ``critical_since`` has outlived its service's
    ``DeregisterCriticalServiceAfter`` (at least Consul's one minute)."""
    if critical_since is None or d is None or d.deregister_after_s <= 0:
        return False
    return now - critical_since >= max(d.deregister_after_s, DEREGISTER_MIN_S)
