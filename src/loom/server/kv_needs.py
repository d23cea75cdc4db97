"""What the KV and session routes need from a token before their handler runs.

``guard.NEEDS`` names these for ``/v1/kv``, ``/v1/txn`` and ``/v1/session``: Consul's
``key:read``/``key:write`` on the key of the path, and ``session:read``/``session:write`` on
the node a session belongs to. Lists (``?recurse``, ``?keys``, ``/v1/session/list``) need
nothing here: their handlers filter what the token may not read. The module knows no
handler, so the guard can import it without importing the handlers that import the guard.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

from loom.acl.rules import Access
from loom.control.state import State
from loom.domain.fields import Fields, ValidationError
from loom.domain.kv import check_key

Need = tuple[str, Access, str]
Needs = Callable[[web.Request, State], Awaitable[list[Need]]]
PREFIX = "/v1/kv/"


def request_key(request: web.Request) -> str:
    """The key of a ``/v1/kv/`` request, percent-decoded from the raw path as bytes and then
    as strict UTF-8 (aiohttp would keep an undecodable ``%FF`` as text, which another key
    spelled ``%25FF`` would then collide with)."""
    raw = request.raw_path.split("?", 1)[0]
    if not raw.startswith(PREFIX):
        raise ValidationError("Missing key name")
    data = urllib.parse.unquote_to_bytes(raw[len(PREFIX) :])
    try:
        key = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("key: is not valid UTF-8") from None
    return check_key(key, allow_empty=True)


def _flag(request: web.Request, name: str) -> bool:
    return name in request.query and request.query[name] not in ("false", "0")


async def kv_read(request: web.Request, state: State) -> list[Need]:
    if _flag(request, "recurse") or _flag(request, "keys"):
        return []  # filtered by key:read in the handler
    return [("key", Access.READ, request_key(request))]


async def kv_write(request: web.Request, state: State) -> list[Need]:
    if request.method == "DELETE" and _flag(request, "recurse"):
        return []  # write on the whole prefix: checked by the handler (key_write_prefix)
    return [("key", Access.WRITE, request_key(request))]


async def session_create(request: web.Request, state: State) -> list[Need]:
    from loom.server.http import _body

    body = await _body(request)
    node = Fields(body or {}, "").text("Node") or state.settings.node
    return [("session", Access.WRITE, node)]


def session_of(access: Access) -> Needs:
    """``access`` on the node of the session named by the path (none when it is unknown:
    the handler answers as Consul does for a missing session)."""

    async def needs(request: web.Request, state: State) -> list[Need]:
        session = state.sessions.get(request.match_info["id"])
        return [("session", access, session.node)] if session is not None else []

    return needs
