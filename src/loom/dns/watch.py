"""Where name tables come from: the server's blocking query, or a JSON file.

``watch_table`` long-polls ``GET /v1/loom/dns-table?index=N&wait=30s`` the way Consul clients
do: each answer's ``X-Consul-Index`` is the next ``index``; an index that goes backwards starts
over from 0; failures back off exponentially (1 s to 30 s) with one log line each, and at least
``MIN_INTERVAL_S`` passes between requests whatever the server does, so a misbehaving server
cannot turn the loop into a busy one. ``watch_table_file`` re-reads a ``--table`` file when its
mtime or size changes. Both swap whole tables into the proxy and keep the old table on error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import TYPE_CHECKING

import aiohttp

from loom.dns.errors import DnsError, TableError
from loom.dns.table import NameTable

if TYPE_CHECKING:
    from loom.dns.server import DnsProxy

log = logging.getLogger("loom.dns.watch")

TABLE_PATH = "/v1/loom/dns-table"
WAIT = "30s"
"""How long the server may hold a blocking query open."""
HTTP_TIMEOUT_S = 45.0
"""Client-side limit of one request: the server's wait plus its jitter and a margin."""
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
MIN_INTERVAL_S = 0.05
"""Least time between two requests, whatever the server answers."""
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


def endpoint(http_addr: str) -> tuple[str, str | None]:
    """(base URL, unix socket path or None) for ``host:port``, ``http(s)://...``, ``unix:/p``."""
    if http_addr.startswith("unix:"):
        return "http://localhost", http_addr[len("unix:") :]
    if http_addr.startswith(("http://", "https://")):
        return http_addr.rstrip("/"), None
    return f"http://{http_addr}".rstrip("/"), None


async def fetch_table(
    session: aiohttp.ClientSession, base: str, index: int
) -> tuple[NameTable, int]:
    """One blocking query: the table and the index to wait on next; DnsError on failure."""
    params = {"index": str(index), "wait": WAIT} if index else {}
    try:
        async with session.get(base + TABLE_PATH, params=params) as resp:
            body = await resp.read()
            if resp.status != 200:
                first = body.decode("utf-8", "replace").strip().splitlines()[:1]
                raise DnsError(f"HTTP {resp.status}: {first[0][:200] if first else ''}")
            header = resp.headers.get("X-Consul-Index", "")
    except aiohttp.ClientError as exc:
        raise DnsError(str(exc) or type(exc).__name__) from exc
    except TimeoutError as exc:
        raise DnsError("request timed out") from exc
    try:
        table = NameTable.from_json(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DnsError(f"response is not JSON: {exc}") from exc
    next_index = int(header) if header.isdigit() else table.index
    return table, next_index


async def watch_table(http_addr: str, proxy: DnsProxy, stop: asyncio.Event) -> None:
    """Keep ``proxy``'s table up to date from the server until ``stop`` is set."""
    base, unix_path = endpoint(http_addr)
    connector = aiohttp.UnixConnector(path=unix_path) if unix_path else None
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    loop = asyncio.get_running_loop()
    index = 0
    backoff = BACKOFF_MIN_S
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while not stop.is_set():
            began = loop.time()
            fetch = asyncio.ensure_future(fetch_table(session, base, index))
            if not await _until(fetch, stop):
                return
            try:
                table, next_index = fetch.result()
            except DnsError as exc:
                log.warning("dns table from %s: %s (retry in %.0f s)", http_addr, exc, backoff)
                if await _sleep(stop, backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            if next_index != index or index == 0:
                proxy.set_table(table)
            index = 0 if next_index < index else next_index
            # No usable index means no blocking: poll once a second instead of spinning.
            least = MIN_INTERVAL_S if index else BACKOFF_MIN_S
            spent = loop.time() - began
            if spent < least and await _sleep(stop, least - spent):
                return


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


async def _until(fetch: asyncio.Future[tuple[NameTable, int]], stop: asyncio.Event) -> bool:
    """Wait for ``fetch`` unless ``stop`` comes first (then cancel it); True if it finished."""
    stopper: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[object]] = {fetch, stopper}  # type: ignore[arg-type]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if fetch.done():
        return True
    fetch.cancel()
    await asyncio.gather(fetch, return_exceptions=True)
    return False
