"""Replication over HTTP: the primary's dumps, the status endpoints, and the forwarding of
writes of replicated kinds from a secondary to the primary.

- ``GET /v1/loom/replication/config`` and ``/v1/loom/replication/acl`` (primary side): every
  config entry, and every non-local token, policy and role, as stored; blocking queries on
  their tables. ``config`` needs ``operator:read``, ``acl`` management (it carries secrets).
- ``GET /v1/acl/replication`` (Consul's) and ``GET /v1/loom/replication`` (config entries):
  ``loom.control.replication.ReplicationStatus`` of this server.
- ``forward_writes``, a middleware: on a secondary, a write of a config entry, of an
  intention (every intention endpoint), or of a non-local ACL token, a policy or a role is
  sent to the primary with the caller's token; once the primary answers, the answer waits
  (up to ``READ_YOUR_WRITE_S``) for replication to reach the primary's index, so a read in
  the secondary right after sees the write. The primary names that index in
  ``X-Loom-Replication-Index`` on answers to forwarded requests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from loom.acl.rules import Access
from loom.control.replication import (
    ACL_REPLICATED,
    ACL_SET,
    CONFIG_SET,
    WAIT_S,
    ReplicationStatus,
)
from loom.control.state import State
from loom.server import guard, query
from loom.store.tables import CONFIG, encode

Doc = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

READ_YOUR_WRITE_S = 2.0
FORWARDED_FROM = "X-Loom-Forwarded-From"
INDEX_HEADER = "X-Loom-Replication-Index"

CONFIG_WRITES = frozenset(
    {
        ("PUT", "/v1/config"),
        ("DELETE", "/v1/config/{kind}/{name}"),
        ("PUT", "/v1/connect/intentions/exact"),
        ("DELETE", "/v1/connect/intentions/exact"),
        ("POST", "/v1/connect/intentions"),
        ("PUT", "/v1/connect/intentions/{id}"),
        ("DELETE", "/v1/connect/intentions/{id}"),
    }
)
TOKEN_WRITES = frozenset(
    {("PUT", "/v1/acl/token"), ("PUT", "/v1/acl/token/{id}"), ("DELETE", "/v1/acl/token/{id}")}
)
ACL_WRITES = TOKEN_WRITES | {
    ("PUT", "/v1/acl/policy"),
    ("PUT", "/v1/acl/policy/{id}"),
    ("DELETE", "/v1/acl/policy/{id}"),
    ("PUT", "/v1/acl/role"),
    ("PUT", "/v1/acl/role/{id}"),
    ("DELETE", "/v1/acl/role/{id}"),
}


def _state(request: web.Request) -> State:
    from loom.server.http import STATE

    return request.app[STATE]


def set_index(state: State, which: str) -> int:
    """The primary's index of one replicated set (what its dump reports)."""
    tables = (CONFIG.name,) if which == CONFIG_SET else tuple(t.name for t in ACL_REPLICATED)
    return state.store.table_index(tables)


async def dump(request: web.Request) -> web.Response:
    from loom.server.http import _blocking, _json

    state = _state(request)
    which = request.match_info["set"]
    # An index is never 0 in the answer (as Consul's): a replicator's next blocking query on
    # a table never written yet then blocks instead of returning at once.
    if which == CONFIG_SET:
        index = max(1, await _blocking(request, (CONFIG.name,)))
        entries = [encode(CONFIG.name, e) for e in state.store.records(CONFIG)]
        return _json({"Entries": entries}, index)
    if which == ACL_SET:
        tables = tuple(t.name for t in ACL_REPLICATED)
        index = max(1, await _blocking(request, tables))
        store = state.store
        out: Doc = {
            "Tokens": [s.to_json() for s in state.acl.tokens() if not s.record.local],
            "Policies": [s.to_json() for s in state.acl.policies()],
            "Roles": [s.to_json() for s in state.acl.roles()],
            "TokenIndex": store.table_index((tables[0],)),
            "RoleIndex": store.table_index((tables[2],)),
        }
        return _json(out, index)
    raise web.HTTPNotFound()


def _status(state: State, which: str) -> ReplicationStatus:
    found = state.replicators.get(which)
    if found is not None:
        return found.status
    return ReplicationStatus()


async def acl_replication(request: web.Request) -> web.Response:
    from loom.server.http import _json

    return _json(_status(_state(request), ACL_SET).to_json())


async def config_replication(request: web.Request) -> web.Response:
    from loom.server.http import _json

    return _json(_status(_state(request), CONFIG_SET).to_json())


async def _dump_needs(request: web.Request, state: State) -> list[guard.Need]:
    if request.match_info["set"] == ACL_SET:
        return [("acl", Access.WRITE, "")]
    return [("operator", Access.READ, "")]


NEEDS: dict[tuple[str, str], guard.Needs] = {
    ("GET", "/v1/loom/replication/{set}"): _dump_needs,
    ("GET", "/v1/acl/replication"): guard._nothing,  # Consul's needs no ACL
    ("GET", "/v1/loom/replication"): guard._fixed("operator", Access.READ),
}


async def _token_is_local(request: web.Request, state: State) -> bool:
    """A token write that stays in this datacenter: ``Local`` in its body, or a token
    stored here as local."""
    accessor = request.match_info.get("id")
    if accessor:
        stored = state.store.record(ACL_REPLICATED[0], accessor)
        if stored is not None and stored.record.local:
            return True
    raw = await request.read()
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = json.loads(raw) if raw.strip() else {}
        return isinstance(body, dict) and body.get("Local") is True
    return False


def _replicated_set(route: tuple[str, str] | None) -> str | None:
    if route in CONFIG_WRITES:
        return CONFIG_SET
    if route in ACL_WRITES:
        return ACL_SET
    return None


@web.middleware
async def forward_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = _state(request)
    route = guard.route_of(request)
    which = _replicated_set(route)
    fed = state.federation
    if which is None:
        return await handler(request)
    if fed.is_primary:
        response = await handler(request)
        if FORWARDED_FROM in request.headers:
            response.headers[INDEX_HEADER] = str(set_index(state, which))
        return response
    if which == ACL_SET and route in TOKEN_WRITES and await _token_is_local(request, state):
        return await handler(request)
    request_headers = {FORWARDED_FROM: fed.datacenter}
    # without ?dc=: it named this datacenter, which the primary would send it back to
    response = await query.forward(request, fed.primary, request_headers, keep_dc=False)
    replicator = state.replicators.get(which)
    index = response.headers.get(INDEX_HEADER, "")
    if response.status == 200 and replicator is not None and index.isdigit():
        await replicator.caught_up(int(index), READ_YOUR_WRITE_S)
    return response


async def run_replication(state: State) -> None:
    """Run every replicator of this (secondary) server until cancelled; the primary's
    dumps are read through ``State.federation.call`` (``loom.server.wan.call``) with the
    replication token."""
    import asyncio

    call = state.federation.call
    if call is None or not state.replicators:
        return
    token = state.settings.replication_token or None
    primary = state.federation.primary

    async def fetch(path: str, q: Any) -> tuple[int, dict[str, str], bytes]:
        timeout = float(WAIT_S) + query.BLOCKING_MARGIN_S
        return await call(primary, "GET", path, query=q, token=token, timeout_s=timeout)

    tasks = [asyncio.create_task(r.run(fetch)) for r in state.replicators.values()]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/v1/loom/replication/{set}", dump)
    r.add_get("/v1/acl/replication", acl_replication)
    r.add_get("/v1/loom/replication", config_replication)
    guard.NEEDS.update(NEEDS)


__all__ = ["add_routes", "forward_writes", "run_replication"]
