"""The dataplane's check runner: its sidecar's checks and its workload's, next to them.

A check of a sidecar, or of the instance a sidecar proxies, is this agent's to run
(``loom.domain.checkstate.check_runner``, the rule the server applies to skip them): the
agent follows them by a blocking query on ``GET /v1/agent/checks`` (their ``Definition``;
``/v1/agent/services`` is read with each answer), runs them with the same runner and probes
as the server, and reports each change with
``PUT /v1/agent/check/update/:id`` under its own token, which may write its service and its
sidecar's (a token of another service is refused: the check's service is what the guard
checks). Script checks run only with ``loom dataplane --enable-script-checks``.

The agent is its checks' liveness (``loom.domain.liveness``): every interval the server
asks for (a third of ``loom server --dataplane-deadline``) it sends
``PUT /v1/loom/dataplane/:proxy-id/heartbeat`` with the state of every check it runs, so a
dataplane that is gone turns its checks critical on the server, and one that is back (or
whose report was lost) puts their real state back within an interval.

Consul's "Connect Sidecar Listening" check is driven by what the agent knows of Envoy: while
Envoy is not running, not ready, or has rejected a listener, the check is critical with that
reason as its Output; once every listener is accepted, its TCP probe decides. Nothing here
polls once things are settled: Envoy's state is re-read when it starts, turns ready or exits,
every second while a listener is not accepted, else every ``SETTLED_S``; the alias check
reads the services of the last answer, not the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from loom.aio import first_set
from loom.api import AsyncClient, ClientError
from loom.api.watching import WatchPolicy, watch
from loom.dataplane.envoy import Envoy
from loom.domain.checks import SCRIPT, CheckDefinition, parse_definition
from loom.domain.checkstate import alias_result
from loom.domain.fields import Fields, ValidationError
from loom.domain.records import Check
from loom.domain.services import LISTENING_CHECK
from loom.health.probes import CRITICAL, Result
from loom.health.runner import CheckRunner
from loom.ratelog import RateLimitedLog

log = logging.getLogger("loom.dataplane.checks")
limited = RateLimitedLog(log)


def check_of(doc: Any, scripts: bool) -> Check | None:
    """A check of ``/v1/agent/checks`` as the runner needs it; None if it does not run here
    (no definition, TTL, or a script without ``--enable-script-checks``)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("Definition"), dict):
        return None
    try:
        d = parse_definition(Fields(doc["Definition"], "Definition"), scripts=True, lenient=True)
    except ValidationError as exc:
        limited.warning("bad check", "check %s: %s", doc.get("CheckID"), exc)
        return None
    if d is None or not d.runnable:
        return None
    if d.kind == SCRIPT and not scripts:
        limited.warning("script off", "not running script check %s: give "
                        "--enable-script-checks to run it here", doc.get("CheckID"))  # fmt: skip
        return None
    return Check(
        node=str(doc.get("Node", "")),
        check_id=str(doc.get("CheckID", "")),
        name=str(doc.get("Name", "")),
        status=str(doc.get("Status", "critical")),
        output=str(doc.get("Output", "")),
        service_id=str(doc.get("ServiceID", "")),
        service_name=str(doc.get("ServiceName", "")),
        namespace=str(doc.get("Namespace") or "default"),
        type=d.kind,
        definition=d,
        managed=True,
    )


class EnvoyGate:
    """What Envoy's state says about the listening check (None: let the probe decide)."""

    def __init__(self, proxy_id: str, envoy: Envoy | None) -> None:
        self.proxy_id = proxy_id
        self.envoy = envoy
        self.problem: str | None = "Envoy is starting"

    async def refresh(self) -> bool:
        """Re-read Envoy's state; True if what the gate says changed."""
        before = self.problem
        envoy = self.envoy
        if envoy is None:
            self.problem = None
        elif envoy.proc is None or envoy.proc.returncode is not None:
            self.problem = "Envoy is not running"
        elif envoy.admin is None:
            self.problem = "Envoy is starting"
        else:
            try:
                found = await envoy.listener_problem()
            except (ClientError, OSError) as exc:
                found = f"Envoy's admin API does not answer: {exc}"
            self.problem = f"Envoy {found}" if found else None
        return self.problem != before

    def __call__(self, check: Check) -> Result | None:
        if check.service_id != self.proxy_id or check.name != LISTENING_CHECK:
            return None
        return Result(CRITICAL, self.problem) if self.problem else None


def owns_destination(services: Any, proxy_id: str, destination_id: str) -> bool:
    """Whether this sidecar runs its destination's checks: of the sidecars proxying that
    instance (``/v1/agent/services``), the lowest ID does (the server's rule)."""
    if not isinstance(services, dict):
        return True
    ids = [
        sid
        for sid, svc in services.items()
        if isinstance(svc, dict) and isinstance(svc.get("Proxy"), dict)
        and svc["Proxy"].get("DestinationServiceID") == destination_id
    ]
    return not ids or min(ids) == proxy_id


def owned(
    docs: Any, proxy_id: str, destination_id: str, scripts: bool, destination: bool = True
) -> list[Check]:
    """The checks this agent runs: its sidecar's, and its destination instance's when
    ``destination`` (it is the sidecar that owns them). A mesh gateway has no destination
    (``destination_id`` empty): its own checks only, never the node's."""
    if not isinstance(docs, dict):
        return []
    mine = (proxy_id, destination_id) if destination and destination_id else (proxy_id,)
    out = []
    for doc in docs.values():
        check = check_of(doc, scripts)
        if check is not None and check.service_id in mine:
            out.append(check)
    return out


def dataplane_runner(client: AsyncClient, gate: EnvoyGate, latest: dict[str, Any]) -> CheckRunner:
    async def report(check_id: str, status: str, output: str) -> None:
        await client.put(f"/v1/agent/check/update/{check_id}", {"Status": status, "Output": output})

    async def alias(check: Check, d: CheckDefinition) -> Result:
        node = d.alias_node or check.node
        exists = d.alias_service in (latest.get("services") or {})
        checks = [
            c
            for doc in latest.get("checks", {}).values()
            if isinstance(doc, dict) and doc.get("ServiceID") in (d.alias_service, "")
            and (c := _plain(doc)) is not None
        ]
        return Result(*alias_result(d.alias_service, node, exists, checks))

    return CheckRunner(report, alias, gate)


def _plain(doc: dict[str, Any]) -> Check | None:
    try:
        return Check(node=str(doc["Node"]), check_id=str(doc["CheckID"]), name=str(doc["Name"]),
                     status=str(doc["Status"]), output=str(doc.get("Output", "")),
                     service_id=str(doc.get("ServiceID", "")))  # fmt: skip
    except KeyError:
        return None


HEARTBEAT_S = 5.0
"""The heartbeat interval until the server says its own (a third of its default deadline)."""


class Heartbeat:
    """This agent's heartbeat: the state of the checks it runs, sent at the server's pace."""

    def __init__(self, client: AsyncClient, proxy_id: str) -> None:
        self.client = client
        self.path = f"/v1/loom/dataplane/{proxy_id}/heartbeat"
        self.interval_s = HEARTBEAT_S

    async def send(self, states: dict[str, tuple[str, str]]) -> None:
        body = {"Checks": {cid: {"Status": s, "Output": o} for cid, (s, o) in states.items()}}
        try:
            sent = await self.client.request("PUT", self.path, body, timeout=self.interval_s)
            answer = sent.body
        except ClientError as exc:
            limited.warning("heartbeat", "cannot send the heartbeat: %s", exc)
            return
        if isinstance(answer, dict):
            interval = answer.get("IntervalSeconds")
            if isinstance(interval, int | float) and 0 < interval < 3600:
                self.interval_s = float(interval)
            if answer.get("Ignored"):
                limited.warning("heartbeat ignored", "the server does not count checks %s "
                                "as this agent's", answer["Ignored"])  # fmt: skip

    async def run(self, runner: CheckRunner, stop: asyncio.Event) -> None:
        """Beat until ``stop``: on its own, so that nothing the check loop waits for (the
        server's reads, Envoy's admin API while Envoy restarts) can delay it."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            await self.send(runner.states())
            with contextlib.suppress(TimeoutError):
                wait = self.interval_s - (loop.time() - started)
                await asyncio.wait_for(stop.wait(), max(0.0, wait))


CHECKS_WATCH = WatchPolicy(backoff_max=5.0)
"""The checks' blocking query: after a failure, retried within 5 s at most (the server is
restarting: its checks are what the sidecar is kept in the mesh by)."""

SETTLED_S = 10.0
"""How often Envoy's listener state is re-read once every listener is accepted (while one is
not, every ``poll_s``). Reading it is a config dump on Envoy's main thread, and a dataplane
polling it every second added ~0.5 ms to the p99 of the requests through its Envoy on 2
cores; Envoy's start, readiness and exit are not polled for but told (``Envoy.moved``)."""


async def run_checks(
    client: AsyncClient,
    proxy_id: str,
    destination_id: str,
    envoy: Envoy | None,
    stop: asyncio.Event,
    scripts: bool = False,
    poll_s: float = 1.0,
) -> None:
    """Follow this agent's checks and run them until ``stop``: the checks by a blocking
    query (read again when the catalog moved, not every second), Envoy's state as
    ``follow_envoy`` says."""
    gate = EnvoyGate(proxy_id, envoy)
    latest: dict[str, Any] = {}
    runner = dataplane_runner(client, gate, latest)
    tasks = [
        asyncio.create_task(Heartbeat(client, proxy_id).run(runner, stop)),
        asyncio.create_task(follow_envoy(gate, runner, stop, poll_s)),
        asyncio.create_task(
            _follow_checks(client, proxy_id, destination_id, scripts, runner, latest)
        ),
    ]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.close()


async def _follow_checks(
    client: AsyncClient,
    proxy_id: str,
    destination_id: str,
    scripts: bool,
    runner: CheckRunner,
    latest: dict[str, Any],
) -> None:
    async for docs, _ in watch(client, "/v1/agent/checks", policy=CHECKS_WATCH,
                               label="the checks", logger=log):  # fmt: skip
        services = await _services(client)
        latest["checks"], latest["services"] = docs, services
        mine = owns_destination(services, proxy_id, destination_id)
        runner.sync(owned(docs, proxy_id, destination_id, scripts, mine))


async def _services(client: AsyncClient) -> Any:
    """``/v1/agent/services`` (who owns the destination's checks), retried until it answers."""
    backoff = CHECKS_WATCH.backoff_min
    while True:
        try:
            return await client.get("/v1/agent/services")
        except ClientError as exc:
            limited.warning("services fetch", "cannot read the services: %s", exc)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, CHECKS_WATCH.backoff_max)


async def follow_envoy(
    gate: EnvoyGate, runner: CheckRunner, stop: asyncio.Event, poll_s: float
) -> None:
    """Keep the gate true to Envoy until ``stop``: re-read at once when Envoy started, turned
    ready or exited, every ``poll_s`` while a listener is not accepted, else every
    ``SETTLED_S`` (a listener Envoy rejects later, on a new configuration)."""
    envoy = gate.envoy
    while not stop.is_set():
        if envoy is not None:
            envoy.moved.clear()
        if await gate.refresh():
            runner.kick()
        period = poll_s if gate.problem else max(poll_s, SETTLED_S)
        await first_set(stop, None if envoy is None else envoy.moved, period)
