"""Secondary indexes of the catalog, so registration cost does not grow with the catalog.

The store attaches these to the services, checks and VIPs tables and tells them of every
change as it lands in the view (own writes, other servers' writes through etcd, reloads), so
they are never stale and never rebuilt per request. Keys are kept in insertion order; callers
that need the store's key order sort the (few) keys they get back.

The virtual-IP allocator hands out the lowest free address of 240.0.0.0/4 (skipping the
external block and .0/.255), as a scan from the first address would, without scanning: a
cursor above which nothing was ever allocated, and a heap of the addresses freed below it.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from loom.control.errors import Conflict
from loom.domain.records import Check, Instance, VirtualIp

Keys = dict[str, None]
"""Document keys in insertion order (a dict used as an ordered set)."""

VIP_NET = ipaddress.ip_network("240.0.0.0/4")
EXTERNAL_VIP_NET = ipaddress.ip_network("240.240.0.0/16")
_FIRST = int(VIP_NET.network_address) + 1
_LAST = int(VIP_NET.broadcast_address) - 1
_EXT_LO = int(EXTERNAL_VIP_NET.network_address)
_EXT_HI = int(EXTERNAL_VIP_NET.broadcast_address)


def vip_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _add(index: dict[Any, Keys], field: Any, key: str) -> None:
    index.setdefault(field, {})[key] = None


def _drop(index: dict[Any, Keys], field: Any, key: str) -> None:
    keys = index.get(field)
    if keys is not None:
        keys.pop(key, None)
        if not keys:
            del index[field]


class ServiceIndex:
    """Instances by service name, node and ID; VIP users; ports (all, and sidecars') per node."""

    def __init__(self) -> None:
        self.reset({})

    def reset(self, docs: Mapping[str, Instance]) -> None:
        self.by_name: dict[tuple[str, str], Keys] = {}
        self.by_node: dict[str, Keys] = {}
        self.by_id: dict[str, Keys] = {}
        self.vip_users: dict[str, int] = {}
        """VIP key -> number of instances (proxies excluded) that keep the VIP allocated."""
        self.sidecar_ports: dict[tuple[str, str, int], dict[str, str]] = {}
        """(node, address, port) -> {instance key: destination service ID} of the sidecars
        listening there (sidecars of one node with different addresses are in different network
        namespaces: pods)."""
        self.ports: dict[tuple[str, int], Keys] = {}
        """(node, port) -> keys of every instance (sidecar or not) registered on that port."""
        for key, doc in docs.items():
            self._index(key, doc)

    def put(self, key: str, old: Instance | None, new: Instance) -> None:
        if old is not None:
            self._unindex(key, old)
        self._index(key, new)

    def delete(self, key: str, old: Instance) -> None:
        self._unindex(key, old)

    def _index(self, key: str, d: Instance) -> None:
        _add(self.by_name, (d.namespace, d.service), key)
        _add(self.by_node, d.node, key)
        _add(self.by_id, d.id, key)
        if d.port:
            _add(self.ports, (d.node, d.port), key)
        # By kind, as the catalog counts VIP users: a mesh gateway has a Proxy block too, but
        # holds no sidecar port and counts as a service.
        if d.is_proxy and d.proxy is not None:
            holders = self.sidecar_ports.setdefault((d.node, d.address, d.port), {})
            holders[key] = d.proxy.destination_service_id
        else:
            vk = vip_key(d.namespace, d.service)
            self.vip_users[vk] = self.vip_users.get(vk, 0) + 1

    def _unindex(self, key: str, d: Instance) -> None:
        _drop(self.by_name, (d.namespace, d.service), key)
        _drop(self.by_node, d.node, key)
        _drop(self.by_id, d.id, key)
        if d.port:
            _drop(self.ports, (d.node, d.port), key)
        if d.is_proxy and d.proxy is not None:
            holders = self.sidecar_ports.get((d.node, d.address, d.port), {})
            holders.pop(key, None)
            if not holders:
                self.sidecar_ports.pop((d.node, d.address, d.port), None)
        else:
            vk = vip_key(d.namespace, d.service)
            left = self.vip_users.get(vk, 0) - 1
            if left > 0:
                self.vip_users[vk] = left
            else:
                self.vip_users.pop(vk, None)

    def used_ports(self, node: str) -> Collection[int]:
        """Ports of every instance registered on ``node`` (what a new sidecar port avoids)."""
        return _UsedPorts(self, node)

    def sidecars_on(self, node: str, address: str, port: int, besides: str) -> list[str]:
        """Keys of the sidecars of ``node`` on ``address``:``port``, other than ``besides``."""
        return [k for k in self.sidecar_ports.get((node, address, port), {}) if k != besides]


class _UsedPorts(Collection[int]):
    """A lazy view: membership is a lookup, so the sidecar-port search never scans the node."""

    def __init__(self, index: ServiceIndex, node: str) -> None:
        self._index, self._node = index, node

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and (self._node, port) in self._index.ports

    def __iter__(self) -> Iterator[int]:
        for node, port in list(self._index.ports):
            if node == self._node:
                yield port

    def __len__(self) -> int:
        return sum(1 for _ in self)


class CheckIndex:
    """Checks by instance (node, namespace, service ID), by node, by (node, check ID); TTLs."""

    def __init__(self) -> None:
        self.reset({})

    def reset(self, docs: Mapping[str, Check]) -> None:
        self.by_instance: dict[tuple[str, str, str], Keys] = {}
        self.by_node: dict[str, Keys] = {}
        self.by_check_id: dict[tuple[str, str], Keys] = {}
        self.ttl: Keys = {}
        for key, doc in docs.items():
            self._index(key, doc)

    def put(self, key: str, old: Check | None, new: Check) -> None:
        if old is not None:
            self._unindex(key, old)
        self._index(key, new)

    def delete(self, key: str, old: Check) -> None:
        self._unindex(key, old)

    def _index(self, key: str, c: Check) -> None:
        _add(self.by_instance, (c.node, c.namespace, c.service_id), key)
        _add(self.by_node, c.node, key)
        _add(self.by_check_id, (c.node, c.check_id), key)
        if c.ttl:
            self.ttl[key] = None

    def _unindex(self, key: str, c: Check) -> None:
        _drop(self.by_instance, (c.node, c.namespace, c.service_id), key)
        _drop(self.by_node, c.node, key)
        _drop(self.by_check_id, (c.node, c.check_id), key)
        self.ttl.pop(key, None)


def _valid(n: int) -> bool:
    return not (_EXT_LO <= n <= _EXT_HI or n & 0xFF in (0, 255))


class VipAllocator:
    """Allocated service VIPs, and the next free one: lowest first, freed ones reused."""

    def __init__(self) -> None:
        self.reset({})

    def reset(self, docs: Mapping[str, VirtualIp]) -> None:
        self._used: dict[int, str] = {}
        self._cursor = _FIRST  # every valid address below it is used or in the heap
        self._freed: list[int] = []  # heap; may hold stale (since re-used) entries
        for key, doc in docs.items():
            self.put(key, None, doc)

    def put(self, key: str, old: VirtualIp | None, new: VirtualIp) -> None:
        if old is not None and old.address != new.address:
            self.delete(key, old)
        n = int(ipaddress.IPv4Address(new.address))
        self._used[n] = key
        if n >= self._cursor:
            for gap in range(self._cursor, n):
                if _valid(gap):
                    heapq.heappush(self._freed, gap)
            self._cursor = n + 1

    def delete(self, key: str, old: VirtualIp) -> None:
        n = int(ipaddress.IPv4Address(old.address))
        if self._used.get(n) == key:
            del self._used[n]
            if n < self._cursor:
                heapq.heappush(self._freed, n)

    def pick(self, count: int, releasing: Iterable[str] = ()) -> list[str]:
        """The ``count`` lowest free addresses, counting ``releasing`` (freed by the same
        write) as free. Taken from the free list until ``give_back`` or the write lands."""
        spare = sorted(int(ipaddress.IPv4Address(a)) for a in releasing)
        out: list[int] = []
        while len(out) < count:
            while self._freed and (self._freed[0] in self._used or self._freed[0] in out):
                heapq.heappop(self._freed)
            while self._cursor <= _LAST and not _valid(self._cursor):
                self._cursor += 1
            best = min([*spare[:1], *self._freed[:1], self._cursor])
            if spare and best == spare[0]:
                spare.pop(0)
            elif self._freed and best == self._freed[0]:
                heapq.heappop(self._freed)
            elif self._cursor <= _LAST:
                self._cursor += 1
            else:
                self.give_back(str(ipaddress.IPv4Address(n)) for n in out)
                raise Conflict(f"no free virtual IP left in {VIP_NET}")
            out.append(best)
        return [str(ipaddress.IPv4Address(n)) for n in out]

    def give_back(self, addresses: Iterable[str]) -> None:
        """Undo ``pick`` for a write that failed: the addresses are free again."""
        for a in addresses:
            heapq.heappush(self._freed, int(ipaddress.IPv4Address(a)))
