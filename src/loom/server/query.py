"""The query parameters every Consul endpoint reads the same way, and their checks.

Consul parses a few parameters before any endpoint does its work: ``?dc=`` (a datacenter this
server cannot reach is a 500 ``No path to datacenter``, as Consul's RPC forwarding answers),
the consistency modes (``?stale`` with ``?consistent`` is a 400, and so is ``?cached`` with
``?consistent``), the namespace (``?ns=``, else the ``X-Consul-Namespace`` header), repeated
``?node-meta=key:value`` and repeated ``?tag=``. The middleware here answers the first two for
every route before ACLs are resolved (Consul refuses them before its RPC, where ACLs are
checked); the helpers give handlers the rest.

Loom serves one datacenter, so the consistency modes change nothing once accepted: every
read is from the server's own current view, which is what ``?consistent`` asks for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NAMESPACE_HEADER = "X-Consul-Namespace"
NO_PATH = "No path to datacenter"
STALE_CONSISTENT = "Cannot specify ?stale with ?consistent, conflicting semantics."
CACHED_CONSISTENT = "Cannot specify ?cached with ?consistent, conflicting semantics."


def namespace(request: web.Request) -> str:
    """``?ns=``, else the ``X-Consul-Namespace`` header, else ``default``."""
    return request.query.get("ns") or request.headers.get(NAMESPACE_HEADER, "").strip() or "default"


def node_meta(request: web.Request) -> dict[str, str]:
    """The ``?node-meta=key:value`` pairs (a later one with the same key wins; no colon:
    the key with an empty value), as Consul reads them."""
    out: dict[str, str] = {}
    for raw in request.query.getall("node-meta", []):
        key, _, value = raw.partition(":")
        out[key] = value
    return out


def tags(request: web.Request) -> list[str]:
    """Every ``?tag=`` (all must match)."""
    return list(request.query.getall("tag", []))


def _error(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def refusal(request: web.Request, datacenter: str) -> web.Response | None:
    """Consul's answer to a request its common parameters already refuse; None: go on."""
    q = request.query
    dc = q.get("dc", "")
    if dc and dc != datacenter:
        return _error(500, NO_PATH)
    if request.method in ("GET", "HEAD") and "consistent" in q:
        if "stale" in q:
            return _error(400, STALE_CONSISTENT)
        if "cached" in q:
            return _error(400, CACHED_CONSISTENT)
    return None


def checker(datacenter: Callable[[web.Request], str]) -> Middleware:
    """The middleware applying ``refusal`` with the request's app's datacenter."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = refusal(request, datacenter(request))
        return refused if refused is not None else await handler(request)

    return check


__all__ = [
    "NAMESPACE_HEADER",
    "NO_PATH",
    "checker",
    "namespace",
    "node_meta",
    "refusal",
    "tags",
]
