"""Running a coroutine as a program's main: uvloop when available (it is a dependency)."""

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
