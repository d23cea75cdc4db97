"""Giving the agent's freed heap back to the system (glibc's ``malloc_trim``).

Measured with ``bench/dataplane_rss.py`` (issue 17: the agent <= 30 MB RSS): a few seconds
after Envoy is ready the agent's heap holds about 3.5 MB more than it uses, memory freed by
Python but left resident because glibc only returns the top of the heap, and
``malloc_trim(0)`` (which also releases free pages inside it) gave back 3.6 MB of it in a
measured agent (30.3 MB to 27.0 MB, ctypes' own cost included). ``MALLOC_ARENA_MAX`` made no
difference (one thread allocates). So the agent trims as it starts serving and then every
``TRIM_EVERY_S``; where ``malloc_trim`` does not exist (a libc other than glibc) it does
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("loom.dataplane.heap")
TRIM_EVERY_S = 30.0
"""How often the agent trims its heap (a trim costs well under a millisecond here)."""

_trim: list[Callable[[int], int] | None] = []


def trim() -> bool:
    """Release the free heap to the system; False where there is no ``malloc_trim``."""
    if not _trim:
        try:
            import ctypes

            _trim.append(ctypes.CDLL(None).malloc_trim)
        except (OSError, AttributeError):
            log.debug("no malloc_trim in this libc: the heap is not trimmed")
            _trim.append(None)
    fn = _trim[0]
    if fn is None:
        return False
    fn(0)
    return True


async def trim_every(seconds: float = TRIM_EVERY_S) -> None:
    """Trim now and then every ``seconds`` until cancelled."""
    while trim():
        await asyncio.sleep(seconds)
