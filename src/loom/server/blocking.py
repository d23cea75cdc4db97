"""Consul's blocking queries (``?index=N&wait=D``): the one way every endpoint waits.

A read that names an index parks until what it reads moves past that index, its wait runs
out (``wait``, default 5 min, at most 10 min, as Consul), or the server shuts down — then it
answers with what it has. ``Watchers`` counts the parked reads and holds the one signal that
ends them all at shutdown; ``wait_params`` reads the two query parameters; ``park`` waits on
one awaitable under those rules. What to wait *on* (store tables, one KV prefix, an agent
service's hash) is the caller's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from loom.domain.fields import ValidationError, parse_duration

T = TypeVar("T")

MAX_WAIT_S = 600.0
DEFAULT_WAIT_S = 300.0


class Watchers:
    """The blocking queries in flight, and the one signal that ends them all at shutdown.

    aiohttp cancels a blocking query's handler when its client goes away (handler
    cancellation is on), so ``count`` falls back as soon as abandoned watchers disconnect;
    it is shown on Loom's own endpoints as ``X-Loom-Blocking-Queries``.
    """

    def __init__(self) -> None:
        self.count = 0
        self._closing: asyncio.Future[None] | None = None

    def closing(self) -> asyncio.Future[None]:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        return self._closing

    def close(self) -> None:
        """Every blocking query returns now, with the index it has (a clean, normal answer)."""
        closing = self.closing()
        if not closing.done():
            closing.set_result(None)


WATCHERS: web.AppKey[Watchers] = web.AppKey("watchers", Watchers)


def wait_params(request: web.Request) -> tuple[int, float] | None:
    """``(index, seconds)`` of a blocking query, or None when the read is not one."""
    raw = request.query.get("index")
    if raw is None:
        return None
    try:
        after = int(raw)
    except ValueError:
        raise ValidationError(f"index: {raw!r} is not an integer") from None
    wait = request.query.get("wait")
    timeout = min(parse_duration(wait, "wait"), MAX_WAIT_S) if wait else DEFAULT_WAIT_S
    return after, timeout


def timeout_of(request: web.Request) -> float:
    """The ``wait`` of a read (default 5 min, at most 10), whether or not it gives an index."""
    wait = request.query.get("wait")
    return min(parse_duration(wait, "wait"), MAX_WAIT_S) if wait else DEFAULT_WAIT_S


async def park(request: web.Request, wait: Callable[[], Awaitable[T]]) -> T | None:
    """Run ``wait()`` as a parked read: its result, or None when the server began shutting
    down first (then the caller answers with what it has)."""
    watchers = request.app[WATCHERS]
    closing = watchers.closing()
    if closing.done():
        return None
    waiter = asyncio.ensure_future(wait())
    watchers.count += 1
    try:
        await asyncio.wait((waiter, closing), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watchers.count -= 1
        waiter.cancel()
    if waiter.done() and not waiter.cancelled():
        return waiter.result()
    return None


def shutting_down(request: web.Request) -> bool:
    return request.app[WATCHERS].closing().done()


__all__ = [
    "DEFAULT_WAIT_S",
    "MAX_WAIT_S",
    "WATCHERS",
    "Watchers",
    "park",
    "shutting_down",
    "timeout_of",
    "wait_params",
]
