"""The datacenters this server knows: its own, the primary, and every other one it learned.

``State.federation`` is the one place the rest of the server asks which datacenters exist
and where their servers are (``loom.server.wan.call`` picks a server from ``servers``). The
other datacenters' states live in the store (``federation_states``, one record per datacenter,
written only by ``write_state``), so they survive a restart with a durable store and a change
makes a new mesh snapshot (``MeshSnapshot.remote``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from loom.addrs import Address, parse_address
from loom.domain.federation import TLS_SCHEME, FederationState, publish, same_content
from loom.domain.fields import ValidationError
from loom.domain.mesh import MeshSnapshot
from loom.store import Store, put
from loom.store.tables import FEDERATION_STATES

WILDCARDS = ("", "0.0.0.0", "::")


class WanCall(Protocol):
    """``loom.server.wan.call`` bound to one server's state (``Federation.call``)."""

    async def __call__(
        self,
        dc: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        body: bytes | None = None,
        token: str | None = None,
        timeout_s: float = ...,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]: ...


def reachable_addrs(http_addrs: tuple[str, ...], node_address: str) -> tuple[str, ...]:
    """The forms of ``http_addrs`` another datacenter could dial: ``HOST:PORT`` for plain
    HTTP, ``https://HOST:PORT`` for an ``https://`` one; unix sockets left out, a wildcard
    host (``:8500``, ``0.0.0.0``) replaced by ``node_address``."""
    out = []
    for raw in http_addrs:
        tls = raw.startswith(TLS_SCHEME)
        addr = parse_address(raw.removeprefix("http://").removeprefix(TLS_SCHEME), "--http-addr")
        if addr.is_unix:
            continue
        if addr.host in WILDCARDS:
            addr = Address(node_address, addr.port)
        out.append(f"{TLS_SCHEME}{addr}" if tls else str(addr))
    return tuple(out)


class Federation:
    """This server's view of the federation.

    ``own_servers`` are this datacenter's server addresses as other datacenters reach them
    (what it publishes, and what ``servers(datacenter)`` answers); the bound port of a
    ``:0`` listener is known only once it listens, so the server may replace them then.
    """

    def __init__(
        self,
        store: Store,
        lock: asyncio.Lock,
        datacenter: str,
        primary: str = "",
        own_servers: tuple[str, ...] = (),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.lock = lock
        self.datacenter = datacenter
        self.primary = primary or datacenter
        """The primary datacenter's name (this one's when none was given)."""
        self.own_servers = own_servers
        self._clock = clock
        self._published: FederationState | None = None
        self.call: WanCall | None = None
        """``loom.server.wan.call`` bound to this server's state, set when ``loom server``
        starts (None in a bare ``State``): how code below the server layer (``loom.control``,
        which may not import ``loom.server``) reaches another datacenter. It raises
        ``loom.server.wan.NoPathToDatacenter`` (a ``LoomError``) when none answers."""

    @property
    def is_primary(self) -> bool:
        return self.primary == self.datacenter

    def states(self) -> dict[str, FederationState]:
        """Every other known datacenter's last state, by name."""
        return {s.datacenter: s for s in self.store.records(FEDERATION_STATES)}

    def state(self, datacenter: str) -> FederationState | None:
        """A known other datacenter's last state; None: unknown (or this one)."""
        return self.store.record(FEDERATION_STATES, datacenter)

    def datacenters(self) -> list[str]:
        """This datacenter first, then every other known one, sorted (Consul's order for
        ``/v1/catalog/datacenters`` puts the nearest first)."""
        others = sorted(dc for dc in self.states() if dc != self.datacenter)
        return [self.datacenter, *others]

    def servers(self, datacenter: str) -> tuple[str, ...]:
        """The HTTP API addresses (``HOST:PORT``, or ``https://HOST:PORT``) of
        ``datacenter``'s servers; empty: none known (an unknown datacenter)."""
        if datacenter == self.datacenter:
            return self.own_servers
        found = self.state(datacenter)
        return found.servers if found is not None else ()

    def own_state(self, snap: MeshSnapshot) -> FederationState:
        """What this datacenter publishes, from ``snap``; its ``updated_at`` moves only when
        something else in it changed."""
        now = stamp(self._clock())
        state = publish(snap, self.own_servers, now)
        last = self._published
        if last is not None and same_content(last, state):
            return last
        self._published = state
        return state

    async def learn(self, state: FederationState) -> bool:
        """Keep ``state`` unless what is stored for its datacenter is newer (another server
        may relay an older view of a third datacenter); False: nothing written. This
        datacenter's own state is never stored."""
        if state.datacenter == self.datacenter:
            return False
        stored = self.state(state.datacenter)
        if stored is not None and stored.updated_at > state.updated_at:
            return False
        return await self.write_state(state)

    async def write_state(self, state: FederationState) -> bool:
        """Replace one other datacenter's record; False when it is already stored as is (no
        write, so followers' blocking queries do not wake for nothing)."""
        if state.datacenter == self.datacenter:
            raise ValidationError(
                f"FederationState.Datacenter: {state.datacenter!r} is this datacenter"
            )
        async with self.lock:
            if self.state(state.datacenter) == state:
                return False
            await self.store.apply([put(FEDERATION_STATES, state.datacenter, state)])
            return True


def stamp(at: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds, fixed width: two stamps compare as their times."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = ["Federation", "WanCall", "reachable_addrs", "stamp"]
