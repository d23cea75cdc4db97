"""CSR signing in the server's own process, the CSRs of one event-loop turn back to back.

A CSR's signing is two ECDSA operations (the verify of its self-signature, then the leaf's
signature) whose code and precomputed tables OpenSSL keeps in the CPU caches only while it
is busy with them. Between two requests the server's own Python work (aiohttp, the ACL check,
JSON) evicts them, so a CSR signed on its own costs far more than one signed right after
another: measured on this project's 2-core machine, a verify alone between other work took
282 us, 156 us four in a row, 135 us sixteen in a row (100-105 us in a tight loop); in the
server, verify and sign took 150 + 110 us per request against 95 + 60 us in a loop.

``Batch.run`` queues a signing and answers it on the next turn of the loop, where every
signing queued in the turn before runs back to back, in the order they came. Each is still
its own verify and its own signing (nothing is cached or shared between CSRs); a request that
has gone away by then is skipped. At one request at a time this adds one loop turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batch(Generic[T]):
    """Runs queued CPU-bound calls together on the next turn of the running loop."""

    def __init__(self) -> None:
        self._queue: list[tuple[Callable[[], T], asyncio.Future[T]]] = []

    async def run(self, call: Callable[[], T]) -> T:
        """``call()``'s result (or its exception), once the loop has run it with the other
        calls queued in the same turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((call, future))
        return await future

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        for call, future in queue:
            if future.done():  # its request was cancelled meanwhile
                continue
            try:
                result = call()
            except Exception as exc:  # the caller's to handle, as if it had called it
                future.set_exception(exc)
            else:
                future.set_result(result)
