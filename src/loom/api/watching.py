"""Consul's blocking queries, written once: ``watch(client, path)`` yields each new answer.

The rules (Consul's "Blocking Queries" page, and what its Go ``api/watch`` package does):

- the first request carries no ``index`` and answers at once; each answer's
  ``X-Consul-Index`` is the ``index`` of the next request, with ``wait`` (how long the server
  may hold it);
- an index that goes backwards (the server's state was reset or restored) starts over from
  0; an answer whose index did not move is not yielded again (without an index, each is);
- without a usable index (0) the server cannot block, so the loop polls every
  ``backoff_min`` seconds instead of spinning;
- a failure (unreachable, an error status, a body ``decode`` refuses) is one log line and a
  wait that doubles from ``backoff_min`` to ``backoff_max``; a success resets it;
- at least ``min_interval`` passes between two requests whatever the server does, so a
  misbehaving server that answers at once cannot make the loop busy.

The caller stops the watch by leaving its ``async for`` (or cancelling the task): the open
request is cancelled with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loom.api.errors import ClientError
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.api.asyncclient import AsyncClient

log = logging.getLogger("loom.api.watch")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class WatchPolicy:
    """Pacing of a blocking-query loop."""

    backoff_min: float = 1.0
    """Seconds before the first retry after a failure; also the poll period without index."""
    backoff_max: float = 30.0
    """Longest wait between retries (Consul's watch caps its backoff the same way)."""
    min_interval: float = 0.05
    """Least seconds between two requests, whatever the server answers."""
    margin: float = 10.0
    """Seconds a request may take beyond ``wait`` plus the server's jitter (``wait / 16``)."""


def wait_seconds(wait: str) -> float:
    """Consul's duration text (``30s``, ``500ms``, ``5m``, or bare seconds) in seconds."""
    text = wait.strip()
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            number, scale = text[: -len(unit)], _UNITS[unit]
            break
    else:
        number, scale = text, 1.0
    try:
        seconds = float(number) * scale
    except ValueError:
        raise ClientError(f"wait {wait!r}: expected a duration such as 30s or 500ms") from None
    if seconds < 0:
        raise ClientError(f"wait {wait!r}: must not be negative")
    return seconds


def request_timeout(wait: str, policy: WatchPolicy) -> float:
    """How long one blocking query may take before it counts as failed."""
    seconds = wait_seconds(wait)
    return seconds + seconds / 16 + policy.margin


def next_index(previous: int, answered: int) -> int:
    """The index of the next request: backwards means start over."""
    return 0 if answered < previous else answered


async def watch(
    client: AsyncClient,
    path: str,
    index: int = 0,
    wait: str = "30s",
    *,
    params: Mapping[str, str] | None = None,
    decode: Callable[[Any], Any] | None = None,
    policy: WatchPolicy | None = None,
    label: str | None = None,
    logger: logging.Logger | None = None,
    on_error: Callable[[ClientError, float], None] | None = None,
) -> AsyncIterator[tuple[Any, int]]:
    """(body, index) for the first answer and each one whose index moved, forever.

    ``decode`` turns a body into what is yielded; a ``LoomError`` or ``ValueError`` from it
    counts as a failure. Failures are logged as ``"{label} from {addr}: {reason} (retry in N
    s)"`` to ``logger`` (``label`` defaults to the path, ``logger`` to ``loom.api.watch``),
    or handed to ``on_error(error, retry_in)`` instead when given.
    """
    pacing = policy or WatchPolicy()
    timeout = request_timeout(wait, pacing)
    loop = asyncio.get_running_loop()
    backoff = pacing.backoff_min
    while True:
        began = loop.time()
        query = dict(params or {})
        if index:
            query.update(index=str(index), wait=wait)
        try:
            answer = await client.request("GET", path, params=query or None, timeout=timeout)
            value = answer.body if decode is None else _decoded(decode, answer.body)
        except ClientError as exc:
            if on_error is not None:
                on_error(exc, backoff)
            else:
                (logger or log).warning(
                    "%s from %s: %s (retry in %g s)",
                    label or path, client.addr_text, exc.reason, backoff,
                )  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, pacing.backoff_max)
            continue
        backoff = pacing.backoff_min
        fresh = answer.index != index or index == 0  # without an index every answer is news
        index = next_index(index, answer.index)
        if fresh:
            yield value, index
        least = pacing.min_interval if index else pacing.backoff_min
        spent = loop.time() - began
        if spent < least:
            await asyncio.sleep(least - spent)


def _decoded(decode: Callable[[Any], Any], body: Any) -> Any:
    try:
        return decode(body)
    except (LoomError, ValueError) as exc:
        raise ClientError(str(exc)) from exc
