"""Joining the WAN and following the other datacenters (``loom server --join-wan``).

``run_federation`` runs beside the server's other background tasks and never blocks its
start nor any local request:

- each ``--join-wan HOST:PORT`` is announced to (``PUT /v1/internal/federation-state`` with
  this datacenter's state), retried with backoff until it answers; its answer (every state
  that server knows) is learned;
- every other known datacenter is followed with blocking queries on its
  ``GET /v1/internal/federation-states`` through ``loom.server.wan.call``; what it says of
  itself and of the others is learned (``Federation.learn`` keeps the newest), so a third
  datacenter joining any of them becomes known to all. A followed datacenter that does not
  list this one (it restarted with an empty store) is announced to again.

Requests carry ``ServerSettings.replication_token``; a peer that refuses it is logged (at a
bounded rate) and retried like one that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp

from loom.control.state import State
from loom.domain.federation import FederationState, state_from_json, state_to_json
from loom.domain.fields import ValidationError
from loom.errors import LoomError
from loom.ratelog import RateLimitedLog
from loom.server import wan
from loom.server.federation_http import ANNOUNCE_PATH, LIST_PATH
from loom.store.tables import FEDERATION_TABLES

log = logging.getLogger("loom.server.federation")
noisy = RateLimitedLog(log)

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
FOLLOW_WAIT_S = 30.0
"""The ``wait`` of a follower's blocking query (the request's timeout adds ``MARGIN_S``)."""
MARGIN_S = 10.0
MIN_ROUND_S = 0.05
"""At least this long between two rounds that saw no change (a peer answering a blocking
query at once, again and again, would otherwise be asked in a tight loop)."""


class PeerRefused(LoomError):
    """A peer answered a federation request with an error status."""


def _states(body: bytes) -> list[FederationState]:
    try:
        docs = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"federation states: malformed JSON ({exc})") from exc
    if not isinstance(docs, list):
        raise ValidationError("federation states: expected a list")
    return [state_from_json(d) for d in docs]


async def _learn_all(state: State, states: list[FederationState]) -> None:
    for s in states:
        await state.federation.learn(s)


def _announcement(state: State) -> bytes:
    own = state.federation.own_state(state.snapshot())
    return json.dumps(state_to_json(own)).encode()


def _checked(status: int, body: bytes, what: str) -> bytes:
    if status != 200:
        text = body.decode(errors="replace").strip()[:200]
        raise PeerRefused(f"{what}: HTTP {status} {text}")
    return body


async def join(state: State, addr: str) -> None:
    """Announce to ``addr`` until it answers, then learn what it knows."""
    delay = BACKOFF_FIRST_S
    token = state.settings.replication_token or None
    while True:
        try:
            status, _, body = await wan.call_server(
                state, addr, "PUT", ANNOUNCE_PATH, body=_announcement(state), token=token
            )
            await _learn_all(state, _states(_checked(status, body, f"join {addr}")))
            log.info("joined the WAN through %s", addr)
            return
        except (aiohttp.ClientError, OSError, TimeoutError, LoomError) as exc:
            noisy.warning(f"join {addr}", "cannot join the WAN through %s yet: %s", addr, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)


async def follow(state: State, dc: str) -> None:
    """Follow ``dc``'s list of states with blocking queries, for as long as the server runs."""
    index = 0
    delay = BACKOFF_FIRST_S
    token = state.settings.replication_token or None
    own = state.federation.datacenter
    loop = asyncio.get_running_loop()
    while True:
        query = {"index": str(index), "wait": f"{FOLLOW_WAIT_S:g}s"} if index else {}
        began = loop.time()
        try:
            status, headers, body = await wan.call(
                state, dc, "GET", LIST_PATH, query=query, token=token,
                timeout_s=FOLLOW_WAIT_S + MARGIN_S,
            )  # fmt: skip
            states = _states(_checked(status, body, f"follow {dc}"))
            await _learn_all(state, states)
            if all(s.datacenter != own for s in states):
                status, _, body = await wan.call(
                    state, dc, "PUT", ANNOUNCE_PATH, body=_announcement(state), token=token
                )
                _checked(status, body, f"announce to {dc}")
            got = int(headers.get("X-Consul-Index", "0") or 0)
            if got <= index and loop.time() - began < MIN_ROUND_S:
                await asyncio.sleep(MIN_ROUND_S)
            index = got if got > 0 else 0  # a peer whose index went back restarted: reset
            delay = BACKOFF_FIRST_S
            continue
        except (LoomError, ValueError, aiohttp.ClientError) as exc:
            noisy.warning(f"follow {dc}", "cannot follow datacenter %s: %s", dc, exc)
        index = 0
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)


async def run_federation(state: State) -> None:
    """Join every ``--join-wan`` address and follow every known datacenter until cancelled."""
    tasks: dict[str, asyncio.Task[None]] = {}
    joins = [asyncio.create_task(join(state, a)) for a in state.settings.join_wan]
    try:
        while True:
            for dc in state.federation.states():
                if dc not in tasks and dc != state.federation.datacenter:
                    tasks[dc] = asyncio.create_task(follow(state, dc), name=f"follow {dc}")
            seen = state.store.table_index(FEDERATION_TABLES)
            await state.store.wait(FEDERATION_TABLES, seen, 3600.0)
    finally:
        everything = [*joins, *tasks.values()]
        for task in everything:
            task.cancel()
        for task in everything:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["follow", "join", "run_federation"]
