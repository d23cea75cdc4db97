"""Catalog and health: service instances, checks, nodes and virtual IPs.

Every write validates first (``loom.domain.services``), then commits one atomic transaction.
Virtual IPs: each service name (per namespace) gets a stable address from 240.0.0.0/4 when its
first instance registers, kept while any instance remains, freed when the last one goes. The
240.240.0.0/16 block is left for external services (DNS proxy VIPs), 240.241.0.0/16 for the
services of other datacenters (``loom.control.remotevips``).

A write's cost does not depend on the catalog's size: what it must look at (the instance's
old checks, its node's sidecar ports, the VIP to allocate or free) comes from the indexes in
``catalog_index``, which the store keeps in step with every change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from loom.control.errors import NotFound
from loom.control.indexes import CheckIndex, ServiceIndex, VipAllocator, vip_key
from loom.domain.checks import SERVICE_MAINT_PREFIX
from loom.domain.fields import (
    Fields,
    ValidationError,
    check_id,
    dns_name_warning,
    parse_duration,
)
from loom.domain.records import Check, Instance, Node, TaggedAddress, VirtualIp, unindexed
from loom.domain.services import (
    DEFAULT_NAMESPACE,
    Registration,
    agent_registration,
    catalog_registration,
    check_key,
    instance_key,
)
from loom.store import Delete, Op, Store, put, tables

SERVICES = tables.SERVICES.name
CHECKS = tables.CHECKS.name
NODES = tables.NODES.name
VIPS = tables.VIPS.name
log = logging.getLogger("loom.catalog")


def tag_union(instances: Iterable[Instance]) -> dict[str, tuple[str, ...]]:
    """Service name -> the union of its instances' tags (first-seen order), by name."""
    # Tags as ordered sets (the union stays linear), made only for services with tags:
    # on a large catalog, allocating per instance is what costs (garbage collections).
    union: dict[str, dict[str, None] | None] = {}
    for d in instances:
        tags = union.get(d.service)
        if d.tags:
            if tags is None:
                tags = union[d.service] = {}
            for tag in d.tags:
                tags[tag] = None  # an existing tag keeps its first-seen place
        elif d.service not in union:
            union[d.service] = None
    return {name: tuple(union[name] or ()) for name in sorted(union)}


@dataclass(frozen=True)
class CatalogSettings:
    node: str
    """Node name of agent-API registrations (the server acts as their agent)."""
    node_address: str
    """Address of that node; an instance without an Address is reached here."""
    datacenter: str
    enable_script_checks: bool = False
    """Script checks (``Args``) may be registered (Consul's ``enable_script_checks``)."""


def health_status(checks: list[Check]) -> str:
    """Aggregate like Consul: any critical -> critical, any warning -> warning, else passing."""
    statuses = {c.status for c in checks}
    for status in ("critical", "warning"):
        if status in statuses:
            return status
    return "passing"


Vet = Callable[[Node | None, Registration], None]
"""Sees a parsed registration (and the node of a catalog one) before it is written; raises
to refuse it."""


class Catalog:
    def __init__(
        self, store: Store, settings: CatalogSettings, lock: asyncio.Lock, now: Callable[[], float]
    ) -> None:
        self.store = store
        self.settings = settings
        self._lock = lock
        self._now = now
        self._ttl_deadlines: dict[str, float] = {}
        self._tags_cache: dict[str, tuple[int, dict[str, tuple[str, ...]]]] = {}
        self.services = ServiceIndex()
        self.checks = CheckIndex()
        self.vips = VipAllocator()
        store.attach(SERVICES, self.services)
        store.attach(CHECKS, self.checks)
        store.attach(VIPS, self.vips)

    # -- helpers -----------------------------------------------------------------------------

    def instances(self) -> list[Instance]:
        return self.store.records(tables.SERVICES)

    def _instances(self, keys: Iterable[str]) -> list[Instance]:
        """The instances at ``keys``, in store key order."""
        found = (self.store.record(tables.SERVICES, k) for k in sorted(keys))
        return [i for i in found if i is not None]

    def instances_in(self, namespace: str) -> list[Instance]:
        """Every instance of ``namespace`` (``*``: of all namespaces), in store key order."""
        return [d for d in self.instances() if namespace == "*" or d.namespace == namespace]

    def instances_of(self, namespace: str, service: str) -> list[Instance]:
        return self._instances(self.services.by_name.get((namespace, service), ()))

    def instances_on(self, node: str) -> list[Instance]:
        return self._instances(self.services.by_node.get(node, ()))

    def _checks(self, keys: Iterable[str]) -> list[Check]:
        """The checks at ``keys``, in store key order."""
        found = (self.store.record(tables.CHECKS, k) for k in sorted(keys))
        return [c for c in found if c is not None]

    def checks_on(self, node: str) -> list[Check]:
        return self._checks(self.checks.by_node.get(node, ()))

    def _vip_ops(self, delta: dict[str, int]) -> tuple[list[Op], list[str]]:
        """VIP changes for services whose instance count changes by ``delta``: allocate for a
        first instance, free after the last. Returns the ops and the addresses picked."""
        deletes: list[Op] = []
        releasing: list[str] = []
        wanted: list[str] = []
        for key in sorted(delta):
            after = self.services.vip_users.get(key, 0) + delta[key]
            current = self.store.record(tables.VIPS, key)
            if after <= 0 and current is not None:
                deletes.append(Delete(VIPS, key))
                releasing.append(current.address)
            elif after > 0 and current is None:
                wanted.append(key)
        picked = self.vips.pick(len(wanted), releasing)
        puts: list[Op] = [
            put(tables.VIPS, k, VirtualIp(a)) for k, a in zip(wanted, picked, strict=True)
        ]
        return deletes + puts, picked

    async def commit(self, ops: list[Op], delta: dict[str, int]) -> int:
        """Commit ``ops`` (under the write lock, held by the caller) with the VIP changes for
        the services whose instance count changes by ``delta`` (a ``/v1/txn``)."""
        return await self._commit(ops, delta)

    async def _commit(self, ops: list[Op], delta: dict[str, int]) -> int:
        vip_ops, picked = self._vip_ops(delta)
        try:
            return await self.store.apply([*ops, *vip_ops])
        except BaseException:
            self.vips.give_back(picked)
            raise

    def _ensure_node_ops(self, node: str) -> list[Op]:
        if node != self.settings.node or self.store.peek(NODES, node) is not None:
            return []
        return [put(tables.NODES, node, self._default_node(node))]

    def _default_node(self, node: str) -> Node:
        """The node an instance names without a node registration: this server's address."""
        return Node(node, self.settings.node_address, self.settings.datacenter)

    def _port_held(self, node: str, service_id: str) -> int:
        """The port of ``node``'s instance ``service_id`` now (0: not registered)."""
        inst = self.store.record(tables.SERVICES, instance_key(node, DEFAULT_NAMESPACE, service_id))
        return inst.port if inst is not None else 0

    def _refuse_port_collision(self, key: str, inst: Instance) -> None:
        """Refuse a sidecar on a port another sidecar of its node and address listens on.

        Consul accepts this; Envoy binds listeners with SO_REUSEPORT, so both sidecars would
        start and split connections between two identities. Re-registering the same sidecar
        on its own port is not a collision, nor are sidecars with different addresses (pods
        of one node, each in its own network namespace, all listen on 20000).
        """
        if inst.proxy is None or not inst.port:
            return
        others = self.services.sidecars_on(inst.node, inst.address, inst.port, besides=key)
        for other_key in others:
            other = self.store.record(tables.SERVICES, other_key)
            if other is None or other.proxy is None:
                continue
            where = f"node {inst.node!r}" + (f" address {inst.address}" if inst.address else "")
            raise ValidationError(
                f"Port: sidecar port {inst.port} on {where} is already taken by "
                f"{other.id!r} (the sidecar of {other.proxy.destination_service_id!r})"
            )

    async def _write_registration(self, reg: Registration, extra: list[Op]) -> int:
        index = await self._write_instances(reg, extra)
        for name in dict.fromkeys(inst.service for inst in reg.instances):
            warning = dns_name_warning(name)
            if warning is not None:  # Consul's agent logs it, and registers the service
                log.warning("%s", warning)
        return index

    async def _write_instances(self, reg: Registration, extra: list[Op]) -> int:
        ops: list[Op] = list(extra)
        delta: dict[str, int] = {}
        pending: dict[str, Instance] = {}
        for inst in reg.instances:
            key = instance_key(inst.node, inst.namespace, inst.id)
            self._refuse_port_collision(key, inst)
            old = pending.get(key) or self.store.record(tables.SERVICES, key)
            pending[key] = inst
            for doc, step in ((old, -1), (inst, 1)):
                if doc is not None and not doc.is_proxy:
                    vk = vip_key(doc.namespace, doc.service)
                    delta[vk] = delta.get(vk, 0) + step
            ops.append(put(tables.SERVICES, key, inst))
            # A re-registration replaces the instance's checks (maintenance mode stays).
            owned = self.checks.by_instance.get((inst.node, inst.namespace, inst.id), {})
            ops.extend(
                Delete(CHECKS, ckey)
                for ckey in sorted(owned)
                if not ckey.endswith(f"/{SERVICE_MAINT_PREFIX}{inst.id}")
            )
        for check in reg.checks:
            ckey = check_key(check.node, check.namespace, check.check_id)
            ops.append(put(tables.CHECKS, ckey, check))
            if check.ttl:
                self._ttl_deadlines[ckey] = self._now() + parse_duration(check.ttl, "TTL")
        return await self._commit(ops, delta)

    # -- agent API ---------------------------------------------------------------------------

    async def agent_register(self, body: Any, vet: Vet | None = None) -> int:
        """Register from an agent-API body; ``vet`` sees the parsed registration first and
        may refuse it (ACLs) before anything is written."""
        async with self._lock:
            node = self.settings.node
            reg = agent_registration(
                body,
                node,
                self.settings.datacenter,
                self.services.used_ports(node),
                lambda sid: self._port_held(node, sid),
                self.settings.enable_script_checks,
            )
            if vet is not None:
                vet(None, reg)
            return await self._write_registration(reg, self._ensure_node_ops(node))

    async def agent_deregister(self, service_id: str, namespace: str = "default") -> int:
        """Deregister a service and, as Consul's agent does, the sidecar made for it."""
        check_id(service_id, "service ID")
        return await self.deregister(self.settings.node, namespace, service_id, sidecars=True)

    async def deregister(
        self, node: str, namespace: str, service_id: str, sidecars: bool = False
    ) -> int:
        async with self._lock:
            key = instance_key(node, namespace, service_id)
            if self.store.peek(SERVICES, key) is None:
                raise NotFound(f"unknown service ID {service_id!r}")
            ids = {service_id}
            if sidecars:
                side = self.store.record(
                    tables.SERVICES, instance_key(node, namespace, f"{service_id}-sidecar-proxy")
                )
                if side is not None and side.is_proxy:
                    ids.add(side.id)
            ops: list[Op] = []
            delta: dict[str, int] = {}
            for sid in sorted(ids):
                ikey = instance_key(node, namespace, sid)
                doc = self.store.record(tables.SERVICES, ikey)
                if doc is not None and not doc.is_proxy:
                    vk = vip_key(doc.namespace, doc.service)
                    delta[vk] = delta.get(vk, 0) - 1
                ops.append(Delete(SERVICES, ikey))
            for ckey in sorted(
                k for sid in ids for k in self.checks.by_instance.get((node, namespace, sid), ())
            ):
                ops.append(Delete(CHECKS, ckey))
                self._ttl_deadlines.pop(ckey, None)
            return await self._commit(ops, delta)

    async def update_check(self, check_id_: str, status: str, output: str) -> int:
        async with self._lock:
            keys = self.checks.by_check_id.get((self.settings.node, check_id_))
            if not keys:
                raise NotFound(f"unknown check ID {check_id_!r}")
            key = min(keys)
            check = self.store.record(tables.CHECKS, key)
            assert check is not None
            new = replace(check, status=status, output=output)
            if check.ttl:
                self._ttl_deadlines[key] = self._now() + parse_duration(check.ttl, "TTL")
            if new == check:
                return self.store.index
            return await self.store.apply([put(tables.CHECKS, key, new)])

    async def expire_ttls(self) -> int:
        """Mark TTL checks whose deadline passed as critical (run periodically)."""
        now = self._now()
        async with self._lock:
            ops: list[Op] = []
            for key in sorted(self.checks.ttl):
                check = self.store.record(tables.CHECKS, key)
                if check is None:
                    continue
                deadline = self._ttl_deadlines.setdefault(
                    key, now + parse_duration(check.ttl, "TTL")
                )
                if deadline <= now and check.status != "critical":
                    expired = replace(check, status="critical", output="TTL expired")
                    ops.append(put(tables.CHECKS, key, expired))
            return await self.store.apply(ops)

    # -- catalog API -------------------------------------------------------------------------

    async def catalog_register(self, body: Any, vet: Vet | None = None) -> int:
        async with self._lock:
            node, reg = catalog_registration(body, self.settings.datacenter)
            if vet is not None:
                vet(node, reg)
            ops: list[Op] = []
            old_node = self.store.record(tables.NODES, node.node)
            if old_node is None or unindexed(old_node) != node:
                ops.append(put(tables.NODES, node.node, node))
            return await self._write_registration(reg, ops)

    async def catalog_deregister(self, body: Any) -> int:
        f = Fields(body, "")
        node = f.text("Node", required=True)
        ns = f.text("Namespace", "default") or "default"
        if f.has("ServiceID"):
            return await self.deregister(node, ns, f.text("ServiceID"))
        async with self._lock:
            if self.store.peek(NODES, node) is None:
                raise NotFound(f"unknown node {node!r}")
            if f.has("CheckID"):
                key = check_key(node, ns, f.text("CheckID"))
                if self.store.peek(CHECKS, key) is None:
                    raise NotFound(f"unknown check ID {f.text('CheckID')!r}")
                return await self.store.apply([Delete(CHECKS, key)])
            ops: list[Op] = [Delete(NODES, node)]
            delta: dict[str, int] = {}
            for k in sorted(self.services.by_node.get(node, ())):
                doc = self.store.record(tables.SERVICES, k)
                if doc is not None and not doc.is_proxy:
                    vk = vip_key(doc.namespace, doc.service)
                    delta[vk] = delta.get(vk, 0) - 1
                ops.append(Delete(SERVICES, k))
            ops += [Delete(CHECKS, k) for k in sorted(self.checks.by_node.get(node, ()))]
            return await self._commit(ops, delta)

    # -- queries -----------------------------------------------------------------------------

    def service_tags(self, namespace: str) -> dict[str, tuple[str, ...]]:
        """Service name -> the union of its instances' tags (first-seen order), by name;
        namespace ``*`` means all namespaces. Computed once per change of the services table
        (do not mutate the result)."""
        index = self.store.table_index((SERVICES,))
        cached = self._tags_cache.get(namespace)
        if cached is not None and cached[0] == index:
            return cached[1]  # every watcher of the same index shares one union
        out = tag_union(self.instances_in(namespace))
        if len(self._tags_cache) > 64:  # namespaces asked for: bounded
            self._tags_cache.clear()
        self._tags_cache[namespace] = (index, out)
        return out

    def nodes(self) -> list[Node]:
        """Every node, registered or only named by an instance, by name."""
        nodes = {n.node: n for n in self.store.records(tables.NODES)}
        for d in self.instances():
            nodes.setdefault(d.node, self.node_of(d))
        return [n for _, n in sorted(nodes.items())]

    def service_checks(self, namespace: str, service: str) -> list[Check]:
        return [
            c
            for c in self.store.records(tables.CHECKS)
            if c.service_name == service and c.namespace == namespace
        ]

    def health(
        self, namespace: str, service: str, connect: bool = False, passing: bool = False
    ) -> list[tuple[Instance, list[Check]]]:
        """Instances of ``service`` with the checks that decide their health.

        ``connect``: the service's sidecars (plus its Connect-native instances) instead, each
        with its destination's checks too when they share a node. ``passing``: only those
        whose checks are all passing."""
        if connect:
            candidates = [
                d
                for d in self.instances()
                if d.namespace == namespace
                and (
                    (d.proxy is not None and d.proxy.destination_service_name == service)
                    or (not d.is_proxy and d.service == service and d.connect_native)
                )
            ]
        else:
            candidates = self.instances_of(namespace, service)
        out = []
        for d in candidates:
            checks = self.checks_of(d)
            if connect and d.proxy is not None:
                dest = self.find(d.proxy.destination_service_id, namespace)
                if dest is not None and dest.node == d.node:
                    checks = checks + self.checks_of(dest)
            if passing and health_status(checks) != "passing":
                continue
            out.append((d, checks))
        return out

    # -- views -------------------------------------------------------------------------------

    def checks_of(self, inst: Instance) -> list[Check]:
        """The instance's own checks and its node's, in store key order."""
        by_instance = self.checks.by_instance
        own = by_instance.get((inst.node, inst.namespace, inst.id), {})
        node_wide = by_instance.get((inst.node, inst.namespace, ""), {})
        if not own and not node_wide:
            return []
        return self._checks([*own, *node_wide])

    def node_of(self, inst: Instance) -> Node:
        node = self.store.record(tables.NODES, inst.node)
        return self._default_node(inst.node) if node is None else node

    def vip_of(self, namespace: str, name: str) -> str | None:
        vip = self.store.record(tables.VIPS, vip_key(namespace, name))
        return vip.address if vip else None

    def tagged_addresses(self, inst: Instance) -> dict[str, TaggedAddress]:
        """The instance's tagged addresses plus its service's VIP (``virtual`` unless given,
        and ``consul-virtual``), as Consul reports them."""
        tagged = dict(inst.tagged_addresses)
        vip = None if inst.is_proxy else self.vip_of(inst.namespace, inst.service)
        if vip:
            tagged.setdefault("virtual", TaggedAddress(vip, inst.port))
            tagged["consul-virtual"] = TaggedAddress(vip, inst.port)
        return tagged

    def is_healthy(self, inst: Instance) -> bool:
        """No check of the instance or of its node is critical. ``health_status`` of
        ``checks_of`` without building or sorting the list: the mesh snapshot asks this of
        every instance and sidecar on every write."""
        by_instance = self.checks.by_instance
        record = self.store.record
        for keys in (
            by_instance.get((inst.node, inst.namespace, inst.id), ()),
            by_instance.get((inst.node, inst.namespace, ""), ()),
        ):
            for key in keys:
                check = record(tables.CHECKS, key)
                if check is not None and check.status == "critical":
                    return False
        return True

    def find(self, service_id: str, namespace: str | None = None) -> Instance | None:
        """An instance by ID, on any node (the server's own first)."""
        hits = [
            d
            for d in self._instances(self.services.by_id.get(service_id, ()))
            if namespace is None or d.namespace == namespace
        ]
        hits.sort(key=lambda d: d.node != self.settings.node)
        return hits[0] if hits else None
