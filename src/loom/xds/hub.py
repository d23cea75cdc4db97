"""Change fan-out for xDS sessions: one shared mesh snapshot per store index.

A store write bumps the hub's generation counter once (KV and session writes excepted: the
mesh does not read them); so does a periodic timer, so sessions re-check their stream's token
(one that expired ends its stream). Each bump calls every subscribed session's ``notify``
(``subscribe``) in turn, so a write wakes each stream's task once, not a watcher task per
stream that then wakes the stream (with thousands of streams, half the task switches of a
write).
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
from collections.abc import Callable

from loom.control.state import MESH_READ_TABLES, State
from loom.xds.inputs import Inputs
from loom.xds.resources import Converter, Served
from loom.xds.translate import build_resources, translation_key
from loom.xds.view import collect_inputs

log = logging.getLogger("loom.xds")


class Hub:
    def __init__(self, state: State, refresh_s: float = 30.0, translations: int = 4096) -> None:
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

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, key: int, notify: Callable[[], None]) -> None:
        """Call ``notify`` (which must not block nor raise) after every later bump, until
        ``unsubscribe(key)``."""
        self._notify[key] = notify

    def unsubscribe(self, key: int) -> None:
        self._notify.pop(key, None)

    def _bump(self) -> None:
        self.generation += 1
        for notify in list(self._notify.values()):
            notify()

    async def _watch(self) -> None:
        store = self.state.store
        seen = store.table_index(MESH_READ_TABLES)
        while True:
            # Compare indexes rather than trusting one wake-up per write: a write that lands
            # between our wake-up and the next wait must not be missed. The timeout gives a
            # periodic re-check, which ends the streams of tokens that expired meanwhile.
            if store.table_index(MESH_READ_TABLES) == seen:
                await store.wait(MESH_READ_TABLES, seen, self.refresh_s)
            seen = store.table_index(MESH_READ_TABLES)
            self._bump()

    def inputs(self, proxy_id: str) -> Inputs | None:
        return collect_inputs(self.state.snapshot(), proxy_id)

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
