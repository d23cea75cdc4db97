"""Where name tables come from: the server's blocking query, or a JSON file.

``watch_table`` follows ``GET /v1/loom/dns-table`` with the API client's blocking-query
loop (``AsyncClient.watch``: each answer's ``X-Consul-Index`` is the next ``index``, an index
that goes backwards starts over, failures back off 1 s to 30 s with one log line each, and a
minimum interval between requests). ``watch_table_file`` re-reads a ``--table`` file when its
mtime or size changes. Both swap whole tables into the proxy and keep the old table on error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from loom.api import AsyncClient, TlsSettings
from loom.dns.errors import TableError
from loom.dns.table import NameTable

if TYPE_CHECKING:
    from loom.dns.server import DnsProxy

log = logging.getLogger("loom.dns.watch")

TABLE_PATH = "/v1/loom/dns-table"
WAIT = "30s"
"""How long the server may hold a blocking query open."""
FILE_POLL_S = 1.0


def load_table_file(path: str) -> NameTable:
    """A table from a JSON file in the ``/v1/loom/dns-table`` format."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except OSError as exc:
        raise TableError(f"cannot read table file {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TableError(f"table file {path} is not JSON: {exc}") from exc
    try:
        return NameTable.from_json(obj)
    except TableError as exc:
        raise TableError(f"table file {path}: {exc}") from exc


async def watch_table(
    http_addr: str,
    proxy: DnsProxy,
    stop: asyncio.Event,
    token: str | None = None,
    tls: TlsSettings | None = None,
) -> None:
    """Keep ``proxy``'s table up to date from the server until ``stop`` is set (``token``:
    the ACL token; None takes it from the environment; ``tls``: how an https server is
    verified; None: from the environment)."""
    client = AsyncClient(http_addr, token=token, tls=tls)

    async def follow() -> None:
        tables = client.watch(
            TABLE_PATH, wait=WAIT, decode=NameTable.from_json, label="dns table", logger=log
        )
        async for table, _ in tables:
            proxy.set_table(table)

    await _until_stopped(follow(), stop)


async def watch_table_file(
    path: str, proxy: DnsProxy, stop: asyncio.Event, interval_s: float = FILE_POLL_S
) -> None:
    """Reload ``path`` into ``proxy`` whenever its mtime or size changes, until ``stop``.

    The first poll always loads the file, so a change made between the caller's own first
    load and the start of this loop is not missed.
    """
    seen: tuple[int, int] | None = (-1, -1)
    first = True
    while not await _sleep(stop, interval_s):
        stamp = _stamp(path)
        if stamp == seen:
            continue
        seen = stamp
        quiet, first = first, False  # the first load repeats the caller's: no news
        try:
            proxy.set_table(load_table_file(path))
        except TableError as exc:
            log.warning("%s (keeping the previous table)", exc)
            continue
        if not quiet:
            log.info("reloaded table file %s", path)


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop``; True when stopped."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run ``work`` until it ends or ``stop`` is set (then cancel it, open request and all)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    if task.done() and not task.cancelled():
        task.result()  # the work's own error, if it ended with one
