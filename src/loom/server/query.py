"""The query parameters every Consul endpoint reads the same way, and their checks.

Consul parses a few parameters before any endpoint does its work: ``?dc=`` (another known
datacenter: the request is forwarded there whole, through ``loom.server.wan.call``, with the
caller's token, and its answer passed back; a datacenter this server does not know or cannot
reach is a 500 ``No path to datacenter``, as Consul's RPC forwarding answers),
the consistency modes (``?stale`` with ``?consistent`` is a 400, and so is ``?cached`` with
``?consistent``), the namespace (``?ns=``, else the ``X-Consul-Namespace`` header), repeated
``?node-meta=key:value`` and repeated ``?tag=``. The middleware here answers the first two for
every route before ACLs are resolved (Consul refuses them before its RPC, where ACLs are
checked); the helpers give handlers the rest.

The consistency modes change nothing once accepted: every read is from the answering server's
own current view, which is what ``?consistent`` asks for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from loom.server import wan
from loom.server.blocking import timeout_of

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


FORWARDED_HEADERS = ("X-Consul-Token", "Authorization", NAMESPACE_HEADER, "Content-Type")
"""What a forwarded request keeps of its caller's headers: its token (the other datacenter
decides what it may do), its namespace and the body's type."""
DROPPED_HEADERS = frozenset(
    h.lower()
    for h in ("Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Date", "Server")
)
"""What a forwarded answer does not pass back (this server's connection sets them)."""
HOPS_HEADER = "X-Loom-Hops"
MAX_HOPS = 2
"""How many times one request may be forwarded (``?dc=`` to a secondary, which sends a
replicated write on to the primary): past it, a misconfigured federation answers 500 rather
than sending a request around in circles."""
BLOCKING_MARGIN_S = 10.0
"""A forwarded blocking query's time limit beyond its ``wait``."""


async def forward(
    request: web.Request, dc: str, extra: dict[str, str] | None = None, keep_dc: bool = True
) -> web.Response:
    """The request, sent whole to a server of ``dc`` (with ``extra`` headers; without its
    ``?dc=`` unless ``keep_dc``); its answer as this server's."""
    hops = request.headers.get(HOPS_HEADER, "0")
    hops_n = int(hops) if hops.isascii() and hops.isdigit() else MAX_HOPS
    if hops_n >= MAX_HOPS:
        raise wan.NoPathToDatacenter(dc, f"forwarded {hops_n} times already")
    body = await request.read() if request.can_read_body else None
    headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
    headers.update(extra or {})
    headers[HOPS_HEADER] = str(hops_n + 1)
    timeout = wan.DEFAULT_TIMEOUT_S
    if "index" in request.query or "hash" in request.query:
        timeout = timeout_of(request) + BLOCKING_MARGIN_S
    status, answer, raw = await wan.call(
        request.app, dc, request.method, request.rel_url.raw_path,
        query=[(k, v) for k, v in request.query.items() if keep_dc or k != "dc"],
        body=body or None, headers=headers,
        timeout_s=timeout,
    )  # fmt: skip
    kept = {k: v for k, v in answer.items() if k.lower() not in DROPPED_HEADERS}
    return web.Response(status=status, body=raw, headers=kept)


def checker(
    datacenter: Callable[[web.Request], str],
    known: Callable[[web.Request, str], bool] | None = None,
) -> Middleware:
    """The middleware applying ``refusal`` with the request's app's datacenter, after
    forwarding a request whose ``?dc=`` names another datacenter that ``known`` knows."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        dc = request.query.get("dc", "")
        if dc and known is not None and dc != datacenter(request) and known(request, dc):
            return await forward(request, dc)
        refused = refusal(request, datacenter(request))
        return refused if refused is not None else await handler(request)

    return check


__all__ = [
    "NAMESPACE_HEADER",
    "NO_PATH",
    "checker",
    "forward",
    "namespace",
    "node_meta",
    "refusal",
    "tags",
]
