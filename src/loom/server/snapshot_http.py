"""``GET /v1/snapshot`` (the whole state as a file) and ``PUT /v1/snapshot`` (replace it).

Consul's paths and its rule that both need a management token (``acl:write``, in
``guard.NEEDS``); the file is Loom's own format (``loom.store.archive``, docs/snapshots.md),
not Consul's tar of Raft data. A file that fails any check is a 400 naming the problem, and
the state is left as it was.
"""

from __future__ import annotations

from aiohttp import web

from loom.control import backup
from loom.server import guard
from loom.store.archive import ArchiveError

MAX_SNAPSHOT = 256 * 1024 * 1024
"""Largest snapshot file accepted by ``PUT`` (the rest of the API keeps its 4 MiB limit)."""


async def _file(request: web.Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_SNAPSHOT:
            raise ArchiveError(f"the snapshot is larger than {MAX_SNAPSHOT} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def snapshot_save(request: web.Request) -> web.Response:
    index, blob = await backup.take(guard.state_of(request))
    return web.Response(
        body=blob,
        content_type="application/octet-stream",
        headers={"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true"},
    )


async def snapshot_restore(request: web.Request) -> web.Response:
    """Restore, then register the server itself again (``control.selfreg``) if the snapshot
    lacked its node or ``consul`` service, as a restarted Consul server would."""
    state = guard.state_of(request)
    restored = await backup.restore(state, await _file(request))
    await state.register_self()
    index = max(restored.index, state.store.index)
    return web.Response(text="", headers={"X-Consul-Index": str(index)})


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/v1/snapshot", snapshot_save)
    r.add_put("/v1/snapshot", snapshot_restore)


__all__ = ["MAX_SNAPSHOT", "add_routes"]
