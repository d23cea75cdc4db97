"""Change fan-out for xDS sessions: one shared mesh snapshot per store index.

A store write bumps the hub's generation counter once (KV and session writes excepted: the
mesh does not read them); so does a periodic timer, so sessions re-check their stream's token
(one that expired ends its stream). Each bump calls every subscribed session's ``notify``
(``subscribe``) in turn, so a write wakes each stream's task once, not a watcher task per
stream that then wakes the stream (with thousands of streams, half the task switches of a
write).
A bump wakes only the sessions it can concern: each session declares what its inputs read
(``depend``, ``loom.xds.deps.dependencies``), the hub diffs the mesh snapshot it last saw
against the new one (``loom.xds.deps.changes``) and wakes the sessions whose dependencies
changed, plus those that read everything (transparent proxies, gateways, subscribers that
declared nothing). A change to what every proxy reads, to the ACL or CA tables, or the
periodic tick wakes every session.
Sessions whose inputs did not change send nothing. Translations are shared too: proxies
whose inputs differ only in who they are (``translation_key``) are served one translated,
converted set of resources, kept for the last ``translations`` distinct keys, so a write that
changes a thousand alike proxies translates once, not a thousand times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection

from loom.control.snapshot import MESH_TABLES
from loom.control.state import MESH_READ_TABLES, State
from loom.domain.mesh import MeshSnapshot
from loom.xds.deps import Dep, Known, changes, known
from loom.xds.inputs import Inputs
from loom.xds.resources import Converter, Served
from loom.xds.translate import build_resources, translation_key
from loom.xds.view import collect_inputs

log = logging.getLogger("loom.xds")
OTHER_TABLES = tuple(t for t in MESH_READ_TABLES if t not in MESH_TABLES)
"""Tables a session reads besides the snapshot's (ACL, CA): a write there wakes everyone."""


class Hub:
    def __init__(self, state: State, refresh_s: float = 30.0, translations: int = 16_384) -> None:
        self.state = state
        self.converter = Converter()
        self.translations = translations
        self.translated = 0
        self._served: OrderedDict[Inputs, dict[str, dict[str, Served]]] = OrderedDict()
        self.refresh_s = refresh_s
        self.generation = 0
        self._task: asyncio.Task[None] | None = None
        self.sessions: dict[int, str] = {}
        self._notify: dict[int, Callable[[], None]] = {}
        self._deps: dict[int, Collection[Dep]] = {}  # subscribers absent read everything
        # Dependency -> its subscriber, or the set of them when several: most dependencies
        # (a proxy's own registration, its service's entries) have one, and a set of one
        # key costs ~200 bytes more than the key, per dependency, per proxy.
        self._by_dep: dict[Dep, int | set[int]] = {}
        self._view: MeshSnapshot | None = None
        self.woken = 0
        """Sessions woken so far (every ``notify`` call)."""

    def start(self) -> None:
        # The indexes and the snapshot the first bump is diffed against, taken together: a
        # write made before the watch task first runs must count as a change.
        store = self.state.store
        seen, other = store.table_index(MESH_READ_TABLES), store.table_index(OTHER_TABLES)
        self._view = self.state.snapshot()
        self._task = asyncio.create_task(self._watch(seen, other))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def view(self) -> MeshSnapshot | None:
        """The snapshot of the last bump: sessions were told of every change up to it."""
        return self._view

    def subscribe(
        self, key: int, notify: Callable[[], None], deps: Collection[Dep] | None = None
    ) -> None:
        """Call ``notify`` (which must not block nor raise) after every later bump that
        changes one of ``deps`` (None: every bump), until ``unsubscribe(key)``."""
        self._notify[key] = notify
        self._set_deps(key, deps)

    def depend(self, key: int, deps: Collection[Dep] | None) -> None:
        """Subscriber ``key`` now depends on ``deps`` (None: everything); ignored for a key
        not subscribed."""
        if key in self._notify:
            self._set_deps(key, deps)

    def _set_deps(self, key: int, deps: Collection[Dep] | None) -> None:
        old = self._deps.get(key)
        if deps is not None and old == deps:
            return
        by_dep = self._by_dep
        for d in old or ():
            users = by_dep.get(d)
            if users == key:
                del by_dep[d]
            elif isinstance(users, set):
                users.discard(key)
                if len(users) == 1:
                    by_dep[d] = users.pop()
        if deps is None:
            self._deps.pop(key, None)
            return
        self._deps[key] = deps
        for d in deps:
            users = by_dep.get(d)
            if users is None:
                by_dep[d] = key
            elif isinstance(users, set):
                users.add(key)
            elif users != key:
                by_dep[d] = {users, key}

    def unsubscribe(self, key: int) -> None:
        self._set_deps(key, None)
        self._notify.pop(key, None)

    def _bump(self, changed: frozenset[Dep] | None = None) -> None:
        """Wake the subscribers ``changed`` concerns (None: all of them)."""
        self.generation += 1
        if changed is None:
            woken = list(self._notify.values())
        else:
            keys: set[int] = set()
            by_dep = self._by_dep
            for d in changed:
                users = by_dep.get(d)
                if isinstance(users, int):
                    keys.add(users)
                elif users is not None:
                    keys.update(users)
            # In subscription order, as for everyone: streams sharing a connection are then
            # woken together and their responses written together.
            deps = self._deps
            woken = [n for k, n in self._notify.items() if k in keys or k not in deps]
        self.woken += len(woken)
        for notify in woken:
            notify()

    def _changes(self, everything: bool) -> frozenset[Dep] | None:
        """What changed since the last bump (None: wake everyone); remembers the snapshot.

        With no subscriber that declared what it reads there is nothing to skip: no
        snapshot is built (registering thousands of services before any proxy connects
        would otherwise build one per write), and the next diff wakes everyone."""
        if not self._deps:
            self._view = None
            return None
        old, new = self._view, self.state.snapshot()
        self._view = new
        if everything or old is None:
            return None
        return changes(old, new)

    async def _watch(self, seen: int, other: int) -> None:
        store = self.state.store
        while True:
            # Compare indexes rather than trusting one wake-up per write: a write that lands
            # between our wake-up and the next wait must not be missed. The timeout gives a
            # periodic re-check, which ends the streams of tokens that expired meanwhile.
            if store.table_index(MESH_READ_TABLES) == seen:
                await store.wait(MESH_READ_TABLES, seen, self.refresh_s)
            now = store.table_index(MESH_READ_TABLES)
            now_other = store.table_index(OTHER_TABLES)
            everything = now == seen or now_other != other  # the tick, an ACL or CA write
            seen, other = now, now_other
            self._bump(self._changes(everything))

    def inputs(self, proxy_id: str) -> Inputs | None:
        return collect_inputs(self.state.snapshot(), proxy_id)

    def read(self, proxy_id: str, last: Known | None = None) -> tuple[Inputs | None, Known]:
        """The inputs of ``proxy_id`` now, and what they depend on (``loom.xds.deps.known``:
        ``last``, the answer of the previous read, when still true)."""
        view = self.state.snapshot()
        inputs = collect_inputs(view, proxy_id)
        return inputs, known(view, proxy_id, inputs, last)

    def served(self, inputs: Inputs) -> dict[str, dict[str, Served]]:
        """The resources served for ``inputs`` (shared: callers must not change them).
        Raises what translation raises (a ``LoomError``); a failure is not kept."""
        key = translation_key(inputs)
        found = self._served.get(key)
        if found is not None:
            self._served.move_to_end(key)
            return found
        served = self.converter.serve(build_resources(inputs))
        self.translated += 1
        self._served[key] = served
        if len(self._served) > self.translations:
            self._served.popitem(last=False)
        return served
