"""The agent's checks beyond a service registration: register, deregister, maintenance, health.

``PUT /v1/agent/check/register`` adds one check to the server's node (of a service there, or
of the node itself), validated as Consul validates a check; ``deregister`` removes one.
Maintenance mode is Consul's: a critical check of type ``maintenance``,
``_service_maintenance:<id>`` for a service and ``_node_maintenance`` for the node, that
takes the instance (or every instance of the node) out of healthy answers until it is
disabled. ``agent_health`` answers ``/v1/agent/health/service/*``: the instance's checks and
their aggregated status (a maintenance check outranks all).

The catalog keeps the tables and their indexes; this module only adds writes through the same
lock, so every write still validates first and commits one transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from loom.control.catalog import Catalog
from loom.control.errors import NotFound
from loom.control.serverchecks import ServerChecks
from loom.domain.checks import (
    MAINTENANCE,
    NODE_MAINT_ID,
    SERVICE_MAINT_PREFIX,
    TTL,
    check_type,
    parse_definition,
)
from loom.domain.checkstate import (
    CRITICAL,
    aggregate,
    alias_result,
    reap_due,
)
from loom.domain.fields import Fields, ValidationError, parse_duration
from loom.domain.liveness import Heartbeats, State, gone_writes, restore_writes
from loom.domain.records import Check, Instance, unindexed
from loom.domain.services import CHECK_STATUSES, DEFAULT_NAMESPACE, check_key, instance_key
from loom.store import Delete, Store, put, tables

SERVICE_MAINT_NOTE = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)
NODE_MAINT_NOTE = (
    "Maintenance mode is enabled for this node, but no reason was provided. "
    "This is a default message."
)

CheckVet = Callable[[Check], None]
"""Sees a parsed check before it is written; raises to refuse it (ACLs)."""


@dataclass(frozen=True)
class Health:
    """One instance's agent health: the instance, its checks, their aggregated status."""

    instance: Instance
    checks: list[Check]
    status: str


class AgentChecks:
    def __init__(
        self,
        store: Store,
        lock: asyncio.Lock,
        catalog: Catalog,
        scripts: bool,
        dataplane_deadline_s: float = 15.0,
    ) -> None:
        self.store = store
        self._lock = lock
        self.catalog = catalog
        self.scripts = scripts
        """Script checks may be registered (``--enable-script-checks``)."""
        self._critical_since: dict[str, float] = {}
        self._server = ServerChecks(store, catalog.settings.node)
        self.beats = Heartbeats(dataplane_deadline_s)
        """When each dataplane last sent its heartbeat (``loom.domain.liveness``)."""

    @property
    def node(self) -> str:
        return self.catalog.settings.node

    def _local(self, service_id: str) -> Instance | None:
        return self.store.record(
            tables.SERVICES, instance_key(self.node, DEFAULT_NAMESPACE, service_id)
        )

    def parse(self, body: Any) -> Check:
        """A ``/v1/agent/check/register`` body as the check to write (Consul's rules)."""
        f = Fields(body, "")
        name = f.text("Name")
        if not name:
            raise ValidationError("Name: Missing check name")
        cid = f.text("CheckID", f.text("ID", name)) or name
        service: Instance | None = None
        sid = f.text("ServiceID")
        if sid:
            service = self._local(sid)
            if service is None:
                raise ValidationError(f"ServiceID: ServiceID {sid!r} does not exist")
        definition = parse_definition(f, self.scripts)
        ttl = f.text("TTL")
        if ttl:
            parse_duration(ttl, "TTL")
        if definition is None:
            raise ValidationError("TTL: TTL must be > 0 for TTL checks (or give a check type)")
        if definition.kind == TTL:
            definition = None
        return Check(
            node=self.node,
            check_id=cid,
            name=name,
            status=f.one_of("Status", ("", *CHECK_STATUSES)) or CRITICAL,
            notes=f.text("Notes"),
            output=f.text("Output"),
            service_id=service.id if service else "",
            service_name=service.service if service else "",
            namespace=service.namespace if service else DEFAULT_NAMESPACE,
            type=check_type(definition, ttl),
            ttl=ttl,
            definition=definition,
            managed=definition is not None,
        )

    async def register(self, body: Any, vet: CheckVet | None = None) -> int:
        async with self._lock:
            check = self.parse(body)
            if vet is not None:
                vet(check)
            key = check_key(check.node, check.namespace, check.check_id)
            return await self.store.apply([put(tables.CHECKS, key, check)])

    def find(self, check_id_: str) -> tuple[str, Check] | None:
        keys = self.catalog.checks.by_check_id.get((self.node, check_id_))
        if not keys:
            return None
        key = min(keys)
        check = self.store.record(tables.CHECKS, key)
        return (key, check) if check is not None else None

    async def deregister(self, check_id_: str) -> int:
        async with self._lock:
            found = self.find(check_id_)
            if found is None:
                raise NotFound(f"Unknown check ID {check_id_!r}")
            return await self.store.apply([Delete(tables.CHECKS.name, found[0])])

    async def _maintenance(self, check: Check, enable: bool) -> int:
        async with self._lock:
            key = check_key(check.node, check.namespace, check.check_id)
            current = self.store.record(tables.CHECKS, key)
            if enable and (current is None or unindexed(current) != check):
                return await self.store.apply([put(tables.CHECKS, key, check)])
            if not enable and current is not None:
                return await self.store.apply([Delete(tables.CHECKS.name, key)])
            return self.store.index

    async def service_maintenance(self, service_id: str, enable: bool, reason: str) -> int:
        inst = self.catalog.find(service_id)
        if inst is None or inst.node != self.node:
            raise NotFound(f"Unknown service ID {service_id!r}")
        check = Check(
            node=self.node,
            check_id=f"{SERVICE_MAINT_PREFIX}{inst.id}",
            name="Service Maintenance Mode",
            status=CRITICAL,
            notes=reason or SERVICE_MAINT_NOTE,
            service_id=inst.id,
            service_name=inst.service,
            namespace=inst.namespace,
            type=MAINTENANCE,
        )
        return await self._maintenance(check, enable)

    async def node_maintenance(self, enable: bool, reason: str) -> int:
        check = Check(
            node=self.node,
            check_id=NODE_MAINT_ID,
            name="Node Maintenance Mode",
            status=CRITICAL,
            notes=reason or NODE_MAINT_NOTE,
            type=MAINTENANCE,
        )
        return await self._maintenance(check, enable)

    # -- reads -------------------------------------------------------------------------------

    def health(self, inst: Instance) -> Health:
        checks = self.catalog.checks_of(inst)
        return Health(inst, checks, aggregate(checks))

    def health_by_id(self, service_id: str) -> Health | None:
        inst = self._local(service_id)
        return self.health(inst) if inst is not None else None

    def health_by_name(self, namespace: str, name: str) -> list[Health]:
        return [
            self.health(inst)
            for inst in self.catalog.instances_of(namespace, name)
            if inst.node == self.node
        ]

    def alias(self, check: Check, target: str, node: str) -> tuple[str, str]:
        """An alias check's status: the health of ``target`` on ``node`` (empty: the check's)."""
        node = node or check.node
        inst = self.store.record(tables.SERVICES, instance_key(node, check.namespace, target))
        checks = self.catalog.checks_of(inst) if inst is not None else []
        return alias_result(target, node, inst is not None, checks)

    # -- the server's runner -----------------------------------------------------------------

    def server_owned(self) -> list[Check]:
        """The checks of this node that the server runs (not the dataplanes')."""
        return self._server.owned()

    # -- dataplane liveness ------------------------------------------------------------------

    def dataplane_owned(self) -> Mapping[str, Sequence[Check]]:
        """The checks of this node that dataplanes run, by the runner's proxy ID."""
        return self._server.dataplane_owned()

    async def heartbeat(self, runner: str, reported: dict[str, State]) -> list[str]:
        """Dataplane ``runner`` is alive and sees its checks as ``reported``: write those
        that differ (after its absence, or a lost report). Answers the reported IDs that it
        does not run, which are ignored."""
        async with self._lock:
            inst = self._local(runner)
            if inst is None:
                raise NotFound(f"Unknown service ID {runner!r}")
            self.beats.heard(runner, time.monotonic())
            owned = self._server.run_by(inst)
            writes, ignored = restore_writes(owned, reported)
            ops = [
                put(tables.CHECKS, check_key(c.node, c.namespace, c.check_id),
                    replace(c, status=status, output=output))
                for c, (status, output) in writes
            ]  # fmt: skip
            if ops:
                await self.store.apply(ops)
            return ignored

    async def mark_gone(self, now: float | None = None) -> list[tuple[Check, str]]:
        """Turn critical the checks of dataplanes past their deadline; answers what it
        wrote."""
        now = time.monotonic() if now is None else now
        async with self._lock:
            owned = self.dataplane_owned()
            self.beats.forget(owned, now)
            writes = gone_writes(owned, self.beats, now)
            ops = [
                put(tables.CHECKS, check_key(c.node, c.namespace, c.check_id),
                    replace(c, status=CRITICAL, output=output))
                for c, output in writes
            ]  # fmt: skip
            if ops:
                await self.store.apply(ops)
            return writes

    def due_for_reaping(self, now: float | None = None) -> list[str]:
        """Service IDs whose check has been critical longer than its
        ``DeregisterCriticalServiceAfter`` (Consul's reaper, for this node's checks)."""
        now = time.monotonic() if now is None else now
        seen: set[str] = set()
        due: set[str] = set()
        for key, c in sorted(self._server.reapable.items()):
            assert c.definition is not None
            seen.add(key)
            if c.status != CRITICAL:
                self._critical_since.pop(key, None)
                continue
            since = self._critical_since.setdefault(key, now)
            if reap_due(since, c.definition, now):
                due.add(c.service_id)
        for key in set(self._critical_since) - seen:
            del self._critical_since[key]
        return sorted(due)
