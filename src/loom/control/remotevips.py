"""Local virtual IPs for the services of other datacenters.

A pod in dc1 that dials ``api.ns1`` (an ``api`` found only in dc2) or ``api.virtual.dc2.consul``
needs an address its transparent proxy recognises: this server allocates one per meshed
service of every other datacenter it knows (``federation_states``), from 240.241.0.0/16, a
block the local allocator (``loom.control.indexes``) skips and external services
(240.240.0.0/16) do not use. The DNS table answers it, the outbound listener routes it to that
datacenter (``loom.xds.view``).

Addresses are stable: stored in ``remote_vips`` (key ``<dc>/<ns>/<name>``), kept while the
service is in its datacenter's state (across restarts with a durable store), freed when it
leaves (the lowest free address is taken next, as local VIPs are). IPv4 only, as local
service VIPs are.

The allocation follows the federation states rather than riding in their write (which
``loom.control.federation`` owns): ``RemoteVips.run`` reconciles once at start and after
every change of ``federation_states``, under the write lock, so a new remote service has its
address one write after it appears. Services whose names cannot be DNS names (a peer's
state bypassing validation, a 300-label name) get none; they are counted and logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from loom.control.indexes import REMOTE_VIP_NET
from loom.control.nametable import remote_name_problem
from loom.domain.federation import FederationState
from loom.domain.records import VirtualIp
from loom.errors import LoomError
from loom.ratelog import RateLimitedLog
from loom.store import Delete, Op, Store, StoreConflict, put
from loom.store.tables import FEDERATION_STATES, REMOTE_VIPS

log = logging.getLogger("loom.control.remotevips")
_skips = RateLimitedLog(log)

_BASE = int(REMOTE_VIP_NET.network_address)
_SIZE = REMOTE_VIP_NET.num_addresses


def remote_vip_key(datacenter: str, namespace: str, name: str) -> str:
    return f"{datacenter}/{namespace}/{name}"


def split_remote_vip_key(key: str) -> tuple[str, str, str]:
    """(datacenter, namespace, name) of a ``remote_vips`` key."""
    dc, ns, name = key.split("/", 2)
    return dc, ns, name


@dataclass(frozen=True)
class Plan:
    """What one reconciliation changes."""

    free: tuple[str, ...]
    """Keys whose service left its datacenter's state: their addresses are freed."""
    allocate: Mapping[str, str]
    """Key -> the address it gets (lowest free first)."""
    unplaced: tuple[str, ...] = ()
    """Keys left without an address: the block is full."""


def wanted_keys(states: Iterable[FederationState]) -> tuple[set[str], list[str]]:
    """Keys of every meshed remote service that can have DNS names, and why the others
    that are meshed cannot (one line each)."""
    keys: set[str] = set()
    skipped: list[str] = []
    for state in states:
        for svc in state.services:
            if not svc.meshed:
                continue  # no sidecar there: no gateway route, nothing to dial by VIP
            problem = remote_name_problem(state.datacenter, svc.namespace, svc.name)
            if problem is not None:
                skipped.append(problem)
                continue
            keys.add(remote_vip_key(state.datacenter, svc.namespace, svc.name))
    return keys, skipped


def plan(wanted: Collection[str], current: Mapping[str, str]) -> Plan:
    """Free what is no longer wanted, give the lowest free address (no ``.0``/``.255``) to
    what is wanted and has none; a stored address outside the block is replaced."""
    free = tuple(sorted(k for k in current if k not in wanted))
    used: set[int] = set()
    keep: set[str] = set()
    for key, address in current.items():
        n = _offset(address)
        if key in wanted and n is not None and n not in used:
            used.add(n)
            keep.add(key)
    allocate: dict[str, str] = {}
    unplaced: list[str] = []
    n = 0
    for key in sorted(k for k in wanted if k not in keep):
        while n < _SIZE and (n in used or n & 0xFF in (0, 255)):
            n += 1
        if n >= _SIZE:
            unplaced.append(key)
            continue
        used.add(n)
        allocate[key] = str(ipaddress.IPv4Address(_BASE + n))
    return Plan(free, allocate, tuple(unplaced))


def _offset(address: str) -> int | None:
    try:
        n = int(ipaddress.IPv4Address(address)) - _BASE
    except ValueError:
        return None
    return n if 0 <= n < _SIZE else None


class RemoteVips:
    """The ``remote_vips`` table's owner: reads it, reconciles it with the federation."""

    def __init__(self, store: Store, lock: asyncio.Lock) -> None:
        self.store = store
        self.lock = lock
        self.skipped_total = 0
        """Meshed remote services given no address because their names cannot be DNS
        names (each counted when a reconciliation first finds it so)."""
        self.unplaced_total = 0
        """Remote services given no address because 240.241.0.0/16 was full."""
        self._skipped: set[str] = set()

    def addresses(self) -> dict[tuple[str, str, str], str]:
        """(datacenter, namespace, name) -> its local VIP."""
        return {
            split_remote_vip_key(k): v.address for k, v in self.store.items(REMOTE_VIPS.name)
        }

    async def reconcile(self) -> bool:
        """Bring ``remote_vips`` in line with the stored federation states; True if it
        wrote anything."""
        async with self.lock:
            wanted, skipped = wanted_keys(self.store.records(FEDERATION_STATES))
            current = {k: v.address for k, v in self.store.items(REMOTE_VIPS.name)}
            p = plan(wanted, current)
            ops: list[Op] = [Delete(REMOTE_VIPS.name, k) for k in p.free]
            ops += [put(REMOTE_VIPS, k, VirtualIp(a)) for k, a in sorted(p.allocate.items())]
            if ops:
                await self.store.apply(ops)
        fresh = sorted(set(skipped) - self._skipped)
        self._skipped = set(skipped)
        self.skipped_total += len(fresh)
        for line in fresh:
            _skips.warning("remote vip skip", "no virtual IP for %s", line)
        if p.unplaced:
            self.unplaced_total += len(p.unplaced)
            _skips.warning(
                "remote vip full",
                "no virtual IP left in %s for %d services of other datacenters",
                REMOTE_VIP_NET,
                len(p.unplaced),
            )
        return bool(ops)

    async def run(self, wait_s: float = 30.0) -> None:
        """Reconcile now and after every change of the federation states, until cancelled.
        A failed reconciliation is logged and tried again at the next change (or after
        ``wait_s``)."""
        while True:
            seen = self.store.table_index([FEDERATION_STATES.name])
            try:
                await self.reconcile()
            except StoreConflict:
                continue  # another server sharing the store wrote first: look again
            except LoomError as exc:
                _skips.error("remote vip error", "allocating remote virtual IPs: %s", exc)
            await self.store.wait([FEDERATION_STATES.name], seen, wait_s)
