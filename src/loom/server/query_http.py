"""``/v1/query``: Consul's prepared query API over ``loom.control.queries``.

``POST /v1/query`` answers ``{"ID": ...}``; ``GET /v1/query`` and ``GET /v1/query/:id`` the
queries (a list, as Consul); ``PUT`` and ``DELETE /v1/query/:id`` update and remove one;
``GET /v1/query/:id-or-name/execute`` runs one (``?limit=``, ``?near=``) and
``.../explain`` shows the query it would run (a template rendered for the name).

ACLs, as Consul's: writing a named query (or a template, by its name prefix) needs
``query:write`` on the name, on the stored name too for an update or delete; a query without a
name is guarded by its unguessable ID alone. Reading one needs ``query:read`` on its name
(unnamed queries are shown to management tokens only), and the Token of a query is
``<hidden>`` unless the reader has ``acl:write``. Execution checks no query rule; its results
are filtered by ``service:read`` and ``node:read`` of the query's Token when it has one, else
of the caller's token.

Failover, as Consul's: when the local execution keeps nothing (after that filtering) and the
query has a ``Failover``, the same query (rendered, with its Token) is executed in the other
datacenters ``failover_targets`` names, in turn, until one answers with results. Each goes
through ``loom.server.wan.call`` to ``POST /v1/loom/query/execute-remote`` (Loom's stand-in for
Consul's ``PreparedQuery.ExecuteRemote`` RPC) with the caller's token, so the other
datacenter filters what it answers by its own view of that token (or of the query's Token).
A remote execution never fails over further. The answer's ``Datacenter`` is the last
datacenter that answered and ``Failovers`` how many were tried, as Consul counts them.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from typing import Any

from aiohttp import web

from loom.acl.authorizer import Authorizer
from loom.control.errors import NotFound
from loom.control.queries import Executed
from loom.domain.fields import ValidationError
from loom.domain.queries import (
    PreparedQuery,
    Template,
    failover_targets,
    parse_query,
    query_doc,
)
from loom.server import acl_reads, guard, views, wan
from loom.store.tables import QUERIES

log = logging.getLogger("loom.server.query_http")

Doc = dict[str, Any]
HIDDEN = "<hidden>"
REMOTE_PATH = "/v1/loom/query/execute-remote"
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"


def _json(data: Any, index: int | None = None) -> web.Response:
    from loom.server.http import _json as json_response

    return json_response(data, index)


async def _body(request: web.Request) -> Any:
    from loom.server.http import _body as body

    return await body(request)


async def _index(request: web.Request) -> int:
    from loom.server.http import _blocking

    return await _blocking(request, (QUERIES.name,))


# -- ACLs ----------------------------------------------------------------------------------------


def may_read(authz: Authorizer | None, q: PreparedQuery) -> bool:
    if authz is None or authz.acl_write():
        return True
    return has_prefix(q) and authz.query_read(q.name)


def has_prefix(q: PreparedQuery) -> bool:
    """Whether query rules guard it (Consul's ``GetACLPrefix``): a name, or a template
    (whose prefix may be ``""``); an unnamed plain query is guarded by its ID alone."""
    return bool(q.name) or q.is_template


def shown(authz: Authorizer | None, q: PreparedQuery) -> Doc:
    """A query's JSON for this reader: its Token hidden unless the reader manages ACLs."""
    hide = authz is not None and not authz.acl_write()
    return query_doc(q, HIDDEN if hide and q.token else None)


def _vetter(request: web.Request) -> Any:
    authz = guard.authorizer(request)
    if authz is None:
        return None

    def vet(old: PreparedQuery | None, new: PreparedQuery) -> None:
        if old is not None and has_prefix(old):
            authz.check("query", guard.W, old.name)
        if has_prefix(new):
            authz.check("query", guard.W, new.name)

    return vet


def _read_checked(request: web.Request, q: PreparedQuery) -> None:
    authz = guard.authorizer(request)
    if not may_read(authz, q):
        assert authz is not None
        if has_prefix(q):
            authz.check("query", guard.R, q.name)
        raise authz.denial("acl", guard.W, "")  # an unnamed query: management only


# -- handlers ------------------------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    parsed = parse_query(await _body(request))
    q = await state.queries.create(parsed, _vetter(request))
    return _json({"ID": q.id}, q.create_index)


async def listing(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    index = await _index(request)
    authz = guard.authorizer(request)
    found = acl_reads.visible(request, state.queries.all(), lambda r, q: may_read(r.authz, q))
    return _json([shown(authz, q) for q in found], index)


def _stored(request: web.Request) -> PreparedQuery:
    q = guard.state_of(request).queries.get(request.match_info["id"])
    if q is None:
        raise NotFound("Query not found")
    return q


async def get(request: web.Request) -> web.Response:
    index = await _index(request)
    q = _stored(request)
    _read_checked(request, q)
    return _json([shown(guard.authorizer(request), q)], index)


async def update(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    parsed = parse_query(await _body(request), request.match_info["id"])
    await state.queries.update(parsed, _vetter(request))
    return _json(None)


async def delete(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    await state.queries.delete(request.match_info["id"], _vetter(request))
    return _json(None)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return 0
    try:
        limit = int(raw)
    except ValueError as exc:
        raise ValidationError(f"Invalid limit: {raw!r}") from exc
    if limit < 0:
        raise ValidationError(f"Invalid limit: {raw!r}")
    return limit


def _executor(request: web.Request, q: PreparedQuery) -> Authorizer | None:
    """Whose rules filter the results: the query's Token, else the caller's."""
    state = guard.state_of(request)
    if not state.acl.enabled:
        return None
    if q.token:
        return state.acl.authorizer(q.token)
    return guard.authorizer(request)


def execute_doc(request: web.Request, done: Executed) -> Doc:
    state = guard.state_of(request)
    authz = _executor(request, done.query)
    hits = list(done.hits)
    if authz is not None:
        reads = acl_reads.reads_of(authz)
        kept = [h for h in hits if reads.service_read(h[0].service) and reads.node_read(h[0].node)]
        if len(kept) != len(hits):
            acl_reads.mark_filtered(request)
        hits = kept
    cat = state.catalog
    return {
        "Service": done.service,
        "Namespace": done.namespace,
        "Nodes": [views.health_entry(cat, inst, list(checks)) for inst, checks in hits],
        "DNS": {"TTL": done.query.dns_ttl},
        "Datacenter": state.settings.datacenter,
        "Failovers": 0,
    }


async def execute(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    q = state.queries.resolve(request.match_info["id"])
    near = request.query.get("near")
    if near:
        q = replace(q, service=replace(q.service, near=near))
    limit = _limit(request)
    done = state.queries.execute(q, state.settings.node, limit, random.shuffle)
    doc = execute_doc(request, done)
    if not doc["Nodes"] and not q.service.failover.empty:
        doc = await _fail_over(request, q, limit, doc)
    return _json(doc, state.store.index)


async def _fail_over(request: web.Request, q: PreparedQuery, limit: int, doc: Doc) -> Doc:
    """Consul's ``queryFailover``: ``q`` executed in each target datacenter in turn until one
    has results. A datacenter that cannot be reached, or refuses, counts as tried."""
    state = guard.state_of(request)
    others = [dc for dc in state.federation.datacenters() if dc != state.settings.datacenter]
    # The remote side does not have the query: it gets the query itself, as rendered (no
    # longer a template, so it is not rendered twice), with its Token.
    body = json.dumps(
        {"Query": query_doc(replace(q, template=Template())), "Limit": limit}
    ).encode()
    token = guard.secret_of(request) or None
    tried = 0
    for dc in failover_targets(q.service.failover, others):
        tried += 1
        try:
            status, headers, raw = await wan.call(
                request.app, dc, "POST", REMOTE_PATH, body=body, token=token,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
        except wan.NoPathToDatacenter as exc:
            log.warning("prepared query %s: no path to datacenter %s: %s", q.id, dc, exc.reason)
            continue
        answer = _remote_answer(status, raw)
        if answer is None:
            log.warning("prepared query %s: datacenter %s answered %d", q.id, dc, status)
            continue
        if headers.get(FILTERED_HEADER) == "true":
            acl_reads.mark_filtered(request)
        doc = answer
        if answer["Nodes"]:
            break
    return {**doc, "Failovers": tried}


def _remote_answer(status: int, raw: bytes) -> Doc | None:
    """Another datacenter's execution answer, if it is one."""
    if status != 200:
        return None
    try:
        answer = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("Nodes"), list):
        return None
    return answer


async def execute_remote(request: web.Request) -> web.Response:
    """``POST /v1/loom/query/execute-remote``: another datacenter's failover. The query comes
    in the body (this datacenter does not store it); it runs here without ``Near`` (this is by
    definition not the caller's datacenter), shuffled, filtered by its Token or the caller's,
    cut to ``Limit``, and never fails over further."""
    state = guard.state_of(request)
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("Query"), dict):
        raise ValidationError('Request decode failed: expected {"Query": {...}}')
    raw_limit = body.get("Limit", 0)
    if isinstance(raw_limit, bool) or not isinstance(raw_limit, int) or raw_limit < 0:
        raise ValidationError(f"Invalid limit: {raw_limit!r}")
    q = parse_query(body["Query"], str(body["Query"].get("ID", "")))
    q = replace(q, service=replace(q.service, near=""))
    done = state.queries.execute(q, state.settings.node, raw_limit, random.shuffle)
    return _json(execute_doc(request, done), state.store.index)


async def explain(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    q = state.queries.resolve(request.match_info["id"])
    _read_checked(request, q)
    return _json({"Query": shown(guard.authorizer(request), q)}, state.store.index)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_post("/v1/query", create)
    r.add_get("/v1/query", listing)
    r.add_get("/v1/query/{id}/execute", execute)
    r.add_get("/v1/query/{id}/explain", explain)
    r.add_post(REMOTE_PATH, execute_remote)
    r.add_get("/v1/query/{id}", get)
    r.add_put("/v1/query/{id}", update)
    r.add_delete("/v1/query/{id}", delete)


__all__ = ["add_routes", "execute_doc", "may_read"]
