"""The federation endpoints: what this server tells other datacenters, and how they announce
themselves.

Consul's read endpoints, with Loom's ``FederationState`` JSON (``loom.domain.federation``):

- ``GET /v1/internal/federation-states``: every datacenter's state this server knows, its own
  first (a blocking query on the mesh tables: it wakes when this datacenter's services or
  gateways change, or another datacenter's state is learned);
- ``GET /v1/internal/federation-state/<dc>``: one of them, as ``{"State": ...}``;
- ``GET /v1/internal/federation-states/mesh-gateways``: the WAN addresses of every known
  datacenter's mesh gateways, by datacenter.

And Loom's announce, ``PUT /v1/internal/federation-state``: a server of another datacenter
sends its own state (``--join-wan``) and gets this server's list back, so both learn each
other and a third datacenter joining either learns all. Reads need ``operator:read`` (they
carry server addresses), the announce ``operator:write``: a state names where ``?dc=``
requests, with their callers' tokens, are sent.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from loom.acl.rules import Access
from loom.control.errors import NotFound
from loom.control.snapshot import MESH_TABLES
from loom.control.state import State
from loom.domain.federation import FederationState, state_from_json, state_to_json
from loom.server import guard

Doc = dict[str, Any]

LIST_PATH = "/v1/internal/federation-states"
ONE_PATH = "/v1/internal/federation-state/{dc}"
GATEWAYS_PATH = "/v1/internal/federation-states/mesh-gateways"
ANNOUNCE_PATH = "/v1/internal/federation-state"


def _state(request: web.Request) -> State:
    from loom.server.http import STATE

    return request.app[STATE]


async def _wait(request: web.Request) -> int:
    from loom.server.http import _blocking

    return await _blocking(request, MESH_TABLES)


def _json(data: Any, index: int) -> web.Response:
    from loom.server.http import _json as as_json

    return as_json(data, index)


def known_states(state: State) -> list[FederationState]:
    """This datacenter's state (from the current snapshot), then every other known one."""
    fed = state.federation
    others = fed.states()
    return [fed.own_state(state.snapshot()), *(others[dc] for dc in sorted(others))]


async def federation_states(request: web.Request) -> web.Response:
    index = await _wait(request)
    return _json([state_to_json(s) for s in known_states(_state(request))], index)


async def federation_state(request: web.Request) -> web.Response:
    index = await _wait(request)
    dc = request.match_info["dc"]
    found = next((s for s in known_states(_state(request)) if s.datacenter == dc), None)
    if found is None:
        raise NotFound(f"no federation state for datacenter {dc!r}")
    return _json({"State": state_to_json(found)}, index)


async def mesh_gateways(request: web.Request) -> web.Response:
    index = await _wait(request)
    out = {
        s.datacenter: [{"Address": e.address, "Port": e.port} for e in s.mesh_gateways]
        for s in known_states(_state(request))
        if s.mesh_gateways
    }
    return _json(out, index)


async def announce(request: web.Request) -> web.Response:
    """Learn the sender's state (400 for anything but a valid state of another datacenter);
    answers with everything this server knows, the sender's state included."""
    from loom.server.http import _body

    state = _state(request)
    incoming = state_from_json(await _body(request))
    await state.federation.write_state(incoming)  # this DC's own name: a 400
    index = state.store.table_index(MESH_TABLES)
    return _json([state_to_json(s) for s in known_states(state)], index)


NEEDS: dict[tuple[str, str], guard.Needs] = {
    ("GET", LIST_PATH): guard._fixed("operator", Access.READ),
    ("GET", ONE_PATH): guard._fixed("operator", Access.READ),
    ("GET", GATEWAYS_PATH): guard._fixed("operator", Access.READ),
    ("PUT", ANNOUNCE_PATH): guard._fixed("operator", Access.WRITE),
}
"""What each route needs (merged into ``guard.NEEDS`` when the routes are added)."""


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get(GATEWAYS_PATH, mesh_gateways)
    r.add_get(LIST_PATH, federation_states)
    r.add_get(ONE_PATH, federation_state)
    r.add_put(ANNOUNCE_PATH, announce)
    guard.NEEDS.update(NEEDS)


__all__ = ["add_routes", "known_states"]
