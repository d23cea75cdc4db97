"""Intentions by ID, the L4 check, and ``/v1/agent/connect/authorize``, as Consul answers them.

- ``POST /v1/connect/intentions`` answers ``{"ID": uuid}``; ``GET``, ``PUT`` and ``DELETE``
  ``/v1/connect/intentions/:uuid`` act on it (``control.legacy_intentions`` has the rules).
- ``GET /v1/connect/intentions/check`` and ``authorize`` are L4 answers: an intention decided
  by L7 ``Permissions`` counts as a deny there, as Consul documents (only the proxy can judge
  a request), while the proxies' RBAC still enforces the permissions per request.
- ``authorize`` refuses a ``ClientCertURI`` that is not a SPIFFE ID (400 ``not a valid
  Connect identifier``) or not a service's (400 ``not a valid Service identifier``). A
  service identity of another trust domain is answered ``Authorized: false``: Consul skips
  that check, Loom keeps it, as its proxies trust no other trust domain either.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from loom.ca.spiffe import SpiffeError, parse_spiffe_id
from loom.control import legacy_intentions
from loom.control.errors import NotFound
from loom.control.state import State
from loom.domain.fields import Fields, ValidationError, check_name
from loom.domain.intentions import Decision
from loom.server import query, views
from loom.store.tables import CONFIG_TABLES

Doc = dict[str, Any]
NOT_CONNECT = "ClientCertURI not a valid Connect identifier"
NOT_SERVICE = "ClientCertURI not a valid Service identifier"
FOREIGN = "ClientCertURI is not a service identity of this mesh"
OTHER_IDENTITY = re.compile(
    r"^[a-z0-9.-]+(/?|/agent/(client|server)/dc/[^/]+(/id/[^/]+)?|/gateway/mesh/dc/[^/]+)$"
)
"""The other Connect identities Consul knows (the CA's signing ID, an agent's, a server's, a
mesh gateway's): Connect identifiers, but not of a service."""


def _state(request: web.Request) -> State:
    from loom.server.http import STATE

    return request.app[STATE]


async def _body(request: web.Request) -> Any:
    from loom.server.http import _body as body

    return await body(request)


def _json(data: Any, index: int | None = None) -> web.Response:
    from loom.server.http import _json as as_json

    return as_json(data, index)


def l4_only(decision: Decision) -> tuple[bool, str]:
    """The L4 answer of a decision: one made by L7 permissions is a deny."""
    i = decision.intention
    if i is not None and not i.action:
        return False, f"Matched L7 intention: {i.source_ns}/{i.source} => {i.destination}"
    return decision.allowed, decision.reason


# -- by ID -----------------------------------------------------------------------------------


async def intention_create(request: web.Request) -> web.Response:
    new_id = await legacy_intentions.create(_state(request).configs, await _body(request))
    return _json({"ID": new_id})


async def intention_get(request: web.Request) -> web.Response:
    from loom.server.http import _blocking

    state = _state(request)
    legacy_intentions.check_uuid(request.match_info["id"])
    index = await _blocking(request, CONFIG_TABLES)
    found = legacy_intentions.find(state.configs, request.match_info["id"])
    if found is None:
        raise NotFound(legacy_intentions.NOT_FOUND)
    return _json(views.intention(found, index), index)


async def intention_update(request: web.Request) -> web.Response:
    configs = _state(request).configs
    done = await legacy_intentions.update(configs, request.match_info["id"], await _body(request))
    return _json({"ID": done})


async def intention_delete(request: web.Request) -> web.Response:
    await legacy_intentions.delete(_state(request).configs, request.match_info["id"])
    return _json(True)


# -- L4 answers --------------------------------------------------------------------------------


async def intention_check(request: web.Request) -> web.Response:
    src, dst = request.query.get("source"), request.query.get("destination")
    if not src or not dst:
        raise ValidationError("source and destination query parameters are required")
    allowed, reason = l4_only(_state(request).configs.check(src, dst))
    return _json({"Allowed": allowed, "Reason": reason})


def _client_identity(uri: str) -> Any:
    """The SPIFFE service identity of ``uri``; a 400 worded as Consul's otherwise."""
    try:
        return parse_spiffe_id(uri)
    except SpiffeError:
        if uri.startswith("spiffe://") and OTHER_IDENTITY.match(uri.removeprefix("spiffe://")):
            raise ValidationError(NOT_SERVICE) from None
        raise ValidationError(NOT_CONNECT) from None


async def connect_authorize(request: web.Request) -> web.Response:
    state = _state(request)
    f = Fields(await _body(request), "")
    target = f.text("Target")
    if not target:
        raise ValidationError("Target service must be specified")
    check_name(target, "Target")
    identity = _client_identity(f.text("ClientCertURI"))
    if identity.trust_domain != state.certs.trust_domain:
        return _json({"Authorized": False, "Reason": FOREIGN})
    source = f"{identity.namespace}/{identity.service}"
    decision = state.configs.check(source, f"{query.namespace(request)}/{target}")
    allowed, reason = l4_only(decision)
    return _json({"Authorized": allowed, "Reason": reason})


def add_routes(r: web.UrlDispatcher) -> None:
    """After the static ``/v1/connect/intentions/...`` routes, which take precedence."""
    r.add_post("/v1/connect/intentions", intention_create)
    r.add_get("/v1/connect/intentions/{id}", intention_get)
    r.add_put("/v1/connect/intentions/{id}", intention_update)
    r.add_delete("/v1/connect/intentions/{id}", intention_delete)
    r.add_post("/v1/agent/connect/authorize", connect_authorize)


__all__ = ["add_routes", "l4_only"]
