"""Catalog and health: service instances, checks, nodes and virtual IPs.

Every write validates first (``loom.domain.services``), then commits one atomic transaction.
Virtual IPs: each service name (per namespace) gets a stable address from 240.0.0.0/4 when its
first instance registers, kept while any instance remains, freed when the last one goes. The
240.240.0.0/16 block is left for external services (DNS proxy VIPs).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from loom.domain.fields import Fields, check_id, parse_duration
from loom.domain.services import (
    CONNECT_PROXY,
    Registration,
    agent_registration,
    catalog_registration,
    check_key,
    instance_key,
)
from loom.server.errors import NotFound
from loom.store import Delete, Op, Put, Store

Doc = dict[str, Any]

SERVICES = "services"
CHECKS = "checks"
NODES = "nodes"
VIPS = "vips"
CATALOG_TABLES = (SERVICES, CHECKS, NODES, VIPS)

VIP_NET = ipaddress.ip_network("240.0.0.0/4")
EXTERNAL_VIP_NET = ipaddress.ip_network("240.240.0.0/16")


@dataclass(frozen=True)
class CatalogSettings:
    node: str
    """Node name of agent-API registrations (the server acts as their agent)."""
    node_address: str
    """Address of that node; an instance without an Address is reached here."""
    datacenter: str


def vip_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _vip_candidates() -> Iterator[str]:
    first = int(VIP_NET.network_address) + 1
    last = int(VIP_NET.broadcast_address) - 1
    ext_lo, ext_hi = int(EXTERNAL_VIP_NET.network_address), int(EXTERNAL_VIP_NET.broadcast_address)
    for n in range(first, last + 1):
        if ext_lo <= n <= ext_hi or n & 0xFF in (0, 255):
            continue
        yield str(ipaddress.IPv4Address(n))


def health_status(checks: list[Doc]) -> str:
    """Aggregate like Consul: any critical -> critical, any warning -> warning, else passing."""
    statuses = {c["Status"] for c in checks}
    for status in ("critical", "warning"):
        if status in statuses:
            return status
    return "passing"


class Catalog:
    def __init__(
        self, store: Store, settings: CatalogSettings, lock: asyncio.Lock, now: Callable[[], float]
    ) -> None:
        self.store = store
        self.settings = settings
        self._lock = lock
        self._now = now
        self._ttl_deadlines: dict[str, float] = {}
        self._checks_cache: tuple[int, dict[tuple[str, str, str], list[Doc]]] | None = None

    # -- helpers -----------------------------------------------------------------------------

    def instances(self) -> list[Doc]:
        return self.store.values(SERVICES)

    def _vip_ops(self, after: dict[str, Doc]) -> list[Op]:
        """Allocate VIPs for services that gained a first instance, free the vanished."""
        wanted = {
            vip_key(d["Namespace"], d["Service"])
            for d in after.values()
            if d["Kind"] != CONNECT_PROXY
        }
        current = dict(self.store.items(VIPS))
        ops: list[Op] = [Delete(VIPS, k) for k in current if k not in wanted]
        used = {v["Address"] for k, v in current.items() if k in wanted}
        fresh = _vip_candidates()
        for key in sorted(wanted - current.keys()):
            addr = next(a for a in fresh if a not in used)
            used.add(addr)
            ops.append(Put(VIPS, key, {"Address": addr}))
        return ops

    def _ensure_node_ops(self, node: str) -> list[Op]:
        if node != self.settings.node or self.store.get(NODES, node) is not None:
            return []
        doc = {
            "Node": node,
            "ID": "",
            "Address": self.settings.node_address,
            "Datacenter": self.settings.datacenter,
            "TaggedAddresses": {},
            "Meta": {},
        }
        return [Put(NODES, node, doc)]

    async def _write_registration(self, reg: Registration, extra: list[Op]) -> int:
        after = dict(self.store.items(SERVICES))
        ops: list[Op] = list(extra)
        for inst in reg.instances:
            key = instance_key(inst["Node"], inst["Namespace"], inst["ID"])
            after[key] = inst
            ops.append(Put(SERVICES, key, inst))
            # A re-registration replaces the instance's checks.
            for ckey, check in self.store.items(CHECKS):
                if (check["Node"], check["Namespace"], check["ServiceID"]) == (
                    inst["Node"], inst["Namespace"], inst["ID"],
                ):  # fmt: skip
                    ops.append(Delete(CHECKS, ckey))
        for check in reg.checks:
            ops.append(
                Put(CHECKS, check_key(check["Node"], check["Namespace"], check["CheckID"]), check)
            )
            if check["TTL"]:
                self._ttl_deadlines[
                    check_key(check["Node"], check["Namespace"], check["CheckID"])
                ] = self._now() + parse_duration(check["TTL"], "TTL")
        ops.extend(self._vip_ops(after))
        return await self.store.apply(ops)

    # -- agent API ---------------------------------------------------------------------------

    async def agent_register(self, body: Any) -> int:
        async with self._lock:
            node = self.settings.node
            # A re-registration may keep its sidecar's auto-assigned port.
            raw = Fields(body, "")
            own = raw.text("ID") or raw.text("Name")
            used = {
                d["Port"]
                for d in self.instances()
                if d["Node"] == node
                and d["Kind"] == CONNECT_PROXY
                and d["Proxy"]["DestinationServiceID"] != own
            }
            reg = agent_registration(body, node, self.settings.datacenter, used)
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
            if self.store.get(SERVICES, key) is None:
                raise NotFound(f"unknown service ID {service_id!r}")
            ids = {service_id}
            if sidecars:
                ids |= {
                    d["ID"]
                    for d in self.instances()
                    if d["Node"] == node
                    and d["Namespace"] == namespace
                    and d["Kind"] == CONNECT_PROXY
                    and d["ID"] == f"{service_id}-sidecar-proxy"
                }
            after = dict(self.store.items(SERVICES))
            ops: list[Op] = []
            for sid in sorted(ids):
                after.pop(instance_key(node, namespace, sid))
                ops.append(Delete(SERVICES, instance_key(node, namespace, sid)))
            for ckey, check in self.store.items(CHECKS):
                if (check["Node"], check["Namespace"]) == (node, namespace) and check[
                    "ServiceID"
                ] in ids:
                    ops.append(Delete(CHECKS, ckey))
                    self._ttl_deadlines.pop(ckey, None)
            ops.extend(self._vip_ops(after))
            return await self.store.apply(ops)

    async def update_check(self, check_id_: str, status: str, output: str) -> int:
        async with self._lock:
            for key, check in self.store.items(CHECKS):
                if check["CheckID"] == check_id_ and check["Node"] == self.settings.node:
                    new = {**check, "Status": status, "Output": output}
                    if check["TTL"]:
                        self._ttl_deadlines[key] = self._now() + parse_duration(check["TTL"], "TTL")
                    if new == check:
                        return self.store.index
                    return await self.store.apply([Put(CHECKS, key, new)])
            raise NotFound(f"unknown check ID {check_id_!r}")

    async def expire_ttls(self) -> int:
        """Mark TTL checks whose deadline passed as critical (run periodically)."""
        now = self._now()
        async with self._lock:
            ops: list[Op] = []
            for key, check in self.store.items(CHECKS):
                if not check["TTL"]:
                    continue
                deadline = self._ttl_deadlines.setdefault(
                    key, now + parse_duration(check["TTL"], "TTL")
                )
                if deadline <= now and check["Status"] != "critical":
                    ops.append(
                        Put(CHECKS, key, {**check, "Status": "critical", "Output": "TTL expired"})
                    )
            return await self.store.apply(ops)

    # -- catalog API -------------------------------------------------------------------------

    async def catalog_register(self, body: Any) -> int:
        async with self._lock:
            node, reg = catalog_registration(body, self.settings.datacenter)
            ops: list[Op] = []
            if self.store.get(NODES, node["Node"]) != node:
                ops.append(Put(NODES, node["Node"], node))
            return await self._write_registration(reg, ops)

    async def catalog_deregister(self, body: Any) -> int:
        f = Fields(body, "")
        node = f.text("Node", required=True)
        ns = f.text("Namespace", "default") or "default"
        if f.has("ServiceID"):
            return await self.deregister(node, ns, f.text("ServiceID"))
        async with self._lock:
            if self.store.get(NODES, node) is None:
                raise NotFound(f"unknown node {node!r}")
            if f.has("CheckID"):
                key = check_key(node, ns, f.text("CheckID"))
                if self.store.get(CHECKS, key) is None:
                    raise NotFound(f"unknown check ID {f.text('CheckID')!r}")
                return await self.store.apply([Delete(CHECKS, key)])
            after = {k: d for k, d in self.store.items(SERVICES) if d["Node"] != node}
            ops: list[Op] = [Delete(NODES, node)]
            ops += [Delete(SERVICES, k) for k, d in self.store.items(SERVICES) if d["Node"] == node]
            ops += [Delete(CHECKS, k) for k, c in self.store.items(CHECKS) if c["Node"] == node]
            ops.extend(self._vip_ops(after))
            return await self.store.apply(ops)

    # -- views -------------------------------------------------------------------------------

    def _checks_by_instance(self) -> dict[tuple[str, str, str], list[Doc]]:
        """Checks grouped by (node, namespace, service ID), rebuilt only when the checks
        table changed: every health view, the DNS table and the xDS view look checks up here."""
        index = self.store.table_index((CHECKS,))
        if self._checks_cache is None or self._checks_cache[0] != index:
            grouped: dict[tuple[str, str, str], list[Doc]] = {}
            for c in self.store.values(CHECKS):  # key order: node/namespace/check ID
                grouped.setdefault((c["Node"], c["Namespace"], c["ServiceID"]), []).append(c)
            self._checks_cache = (index, grouped)
        return self._checks_cache[1]

    def checks_of(self, inst: Doc) -> list[Doc]:
        """The instance's own checks and its node's, in store key order."""
        grouped = self._checks_by_instance()
        own = grouped.get((inst["Node"], inst["Namespace"], inst["ID"]), [])
        node_wide = grouped.get((inst["Node"], inst["Namespace"], ""), [])
        return sorted(own + node_wide, key=lambda c: c["CheckID"]) if node_wide else list(own)

    def node_of(self, inst: Doc) -> Doc:
        node = self.store.get(NODES, inst["Node"])
        if node is None:
            return {
                "Node": inst["Node"], "ID": "", "Address": self.settings.node_address,
                "Datacenter": self.settings.datacenter, "TaggedAddresses": {}, "Meta": {},
            }  # fmt: skip
        return node

    def vip_of(self, namespace: str, name: str) -> str | None:
        doc = self.store.get(VIPS, vip_key(namespace, name))
        return doc["Address"] if doc else None

    def tagged_addresses(self, inst: Doc) -> dict[str, Doc]:
        tagged = dict(inst["TaggedAddresses"])
        vip = (
            self.vip_of(inst["Namespace"], inst["Service"])
            if inst["Kind"] != CONNECT_PROXY
            else None
        )
        if vip:
            tagged.setdefault("virtual", {"Address": vip, "Port": inst["Port"]})
            tagged["consul-virtual"] = {"Address": vip, "Port": inst["Port"]}
        return tagged

    def is_healthy(self, inst: Doc) -> bool:
        return health_status(self.checks_of(inst)) != "critical"

    def find(self, service_id: str, namespace: str | None = None) -> Doc | None:
        """An instance by ID, on any node (the server's own first)."""
        hits = [
            d
            for d in self.instances()
            if d["ID"] == service_id and (namespace is None or d["Namespace"] == namespace)
        ]
        hits.sort(key=lambda d: d["Node"] != self.settings.node)
        return hits[0] if hits else None
