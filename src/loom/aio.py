"""Asyncio helpers: running a coroutine as a program's main (uvloop when available, it is a
dependency), and waiting for the first of two events or a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        return asyncio.run(coro)
    except BaseException:  # Ctrl-C while importing it: the coroutine will never run
        coro.close()
        raise
    result: T = uvloop.run(coro)
    return result


async def first_set(stop: asyncio.Event, other: asyncio.Event | None, timeout: float) -> bool:
    """Wait for ``stop``, ``other`` or ``timeout``; True when it was ``stop``."""
    waits = [asyncio.create_task(stop.wait())]
    if other is not None:
        waits.append(asyncio.create_task(other.wait()))
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return stop.is_set()
