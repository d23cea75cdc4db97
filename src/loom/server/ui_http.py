"""The web UI's routes: ``/ui/`` serves the static files of ``loom.ui``; ``/`` redirects there.

Consul serves its UI at ``/ui/`` and redirects ``/`` to it; so does Loom (``loom server
--no-ui`` or ``--ui=false`` leaves both routes out). The files are public, as Consul's are:
the data they show comes from the API, which checks the token the UI sends (the user logs in
with a token kept in the tab's ``sessionStorage`` and sent as ``X-Consul-Token``). Only files
under the static directory are served, by their resolved path; every response forbids
framing and off-site scripts (a Content-Security-Policy of ``'self'`` only).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from loom.ui import STATIC

UI_PREFIX = "/ui/"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
"""What is served, by suffix (a module script needs a JavaScript MIME type to run)."""
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


def static_file(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``root``, None when it is elsewhere or not served
    (a NUL byte, which no file name holds and ``resolve`` refuses with ValueError, included)."""
    if "\x00" in relative:
        return None
    wanted = (root / (relative or "index.html")).resolve()
    if not wanted.is_relative_to(root) or wanted.suffix not in CONTENT_TYPES:
        return None
    return wanted if wanted.is_file() else None


async def ui_file(request: web.Request) -> web.StreamResponse:
    found = static_file(STATIC, request.match_info.get("path", ""))
    if found is None:
        raise web.HTTPNotFound(text="no such file in the UI\n")
    return web.FileResponse(found, headers={**HEADERS, "Content-Type": CONTENT_TYPES[found.suffix]})


async def to_ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(UI_PREFIX)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/", to_ui)
    r.add_get("/ui", to_ui)
    r.add_get("/ui/{path:.*}", ui_file)


__all__ = ["UI_PREFIX", "add_routes", "static_file"]
