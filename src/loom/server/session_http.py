"""``/v1/session/*``: Consul's session API over ``loom.control.sessions``.

Shapes as Consul's: create answers ``{"ID": ...}``, renew and info a one-element list (info
of an unknown session is ``[]``, renew of one a 404), destroy ``true``; reads are blocking
queries on the sessions table. ACLs: ``session:write`` on the session's node to create,
renew or destroy it, ``session:read`` to read it (``guard.NEEDS``); the list is filtered.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from loom.control.sessions import SESSIONS
from loom.domain.kv import Session, parse_session
from loom.server import acl_reads, guard

Doc = dict[str, Any]


def session_json(s: Session) -> Doc:
    checks = [*s.node_checks, *(c.id for c in s.service_checks)]
    return {
        "ID": s.id, "Name": s.name, "Node": s.node, "LockDelay": s.lock_delay_ns,
        "Behavior": s.behavior, "TTL": s.ttl, "Checks": checks, "NodeChecks": list(s.node_checks),
        "ServiceChecks": [{"ID": c.id, "Namespace": c.namespace} for c in s.service_checks]
        or None,
        "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
    }  # fmt: skip


def _json(data: Any, index: int | None = None) -> web.Response:
    from loom.server.http import _json as json_response

    return json_response(data, index)


async def _index(request: web.Request) -> int:
    from loom.server.http import _blocking

    return await _blocking(request, (SESSIONS,))


async def create(request: web.Request) -> web.Response:
    from loom.server.http import _body

    state = guard.state_of(request)
    parsed = parse_session(await _body(request), state.settings.node)
    session = await state.sessions.create(parsed)
    return _json({"ID": session.id}, session.create_index)


async def destroy(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    await state.sessions.destroy(request.match_info["id"])
    return _json(True, state.store.index)


async def renew(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    session = await state.sessions.renew(request.match_info["id"])
    return _json([session_json(session)], state.store.table_index((SESSIONS,)))


async def info(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    index = await _index(request)
    session = state.sessions.get(request.match_info["id"])
    return _json([session_json(session)] if session is not None else [], index)


async def on_node(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    index = await _index(request)
    found = state.sessions.on_node(request.match_info["node"])
    return _json([session_json(s) for s in found], index)


async def listing(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    index = await _index(request)
    shown = acl_reads.visible(
        request, state.sessions.all(), lambda r, s: r.allowed("session", guard.R, s.node)
    )
    return _json([session_json(s) for s in shown], index)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_put("/v1/session/create", create)
    r.add_put("/v1/session/destroy/{id}", destroy)
    r.add_put("/v1/session/renew/{id}", renew)
    r.add_get("/v1/session/info/{id}", info)
    r.add_get("/v1/session/node/{node}", on_node)
    r.add_get("/v1/session/list", listing)


__all__ = ["add_routes", "session_json"]
