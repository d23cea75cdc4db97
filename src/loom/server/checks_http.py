"""The agent's check endpoints: register/deregister, health by service, maintenance mode.

Consul's paths and answers: ``PUT /v1/agent/check/register`` and ``deregister/:id``;
``GET /v1/agent/health/service/id/:id`` and ``name/:name`` answer 200 when passing, 429
when warning, 503 when critical or in maintenance, with Consul's JSON (``AggregatedStatus``,
``Service``, ``Checks``) or, with ``?format=text``, the status alone; ``PUT
/v1/agent/service/maintenance/:id?enable=&reason=`` and ``PUT /v1/agent/maintenance``; and
Loom's own ``PUT /v1/loom/dataplane/:proxy-id/heartbeat``, a dataplane's liveness. What
each needs under ACLs is in ``server.guard.NEEDS``; the core is ``control.agentchecks``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from loom.acl.rules import Access
from loom.control.agentchecks import Health
from loom.control.errors import NotFound
from loom.domain.checkstate import CRITICAL, HTTP_CODE, PASSING, WARNING, worst
from loom.domain.fields import ValidationError
from loom.server import views
from loom.server.acl_reads import can_read_service, visible
from loom.server.guard import authorizer, check_vetter

CHECK_STATES = (PASSING, WARNING, CRITICAL)


def _state(request: web.Request) -> Any:
    from loom.server.http import STATE

    return request.app[STATE]


async def check_register(request: web.Request) -> web.Response:
    from loom.server.http import _body

    state = _state(request)
    await state.agent_checks.register(await _body(request), check_vetter(request))
    return web.Response(text="")


async def check_deregister(request: web.Request) -> web.Response:
    await _state(request).agent_checks.deregister(request.match_info["id"])
    return web.Response(text="")


def _enable(request: web.Request) -> bool:
    raw = request.query.get("enable")
    if raw is None:
        raise ValidationError("enable: Missing value for enable")
    if raw.lower() not in ("true", "false", "1", "0", "t", "f"):
        raise ValidationError(f"enable: Invalid value for enable: {raw!r}")
    return raw.lower() in ("true", "1", "t")


async def service_maintenance(request: web.Request) -> web.Response:
    enable = _enable(request)
    reason = request.query.get("reason", "")
    await _state(request).agent_checks.service_maintenance(
        request.match_info["id"], enable, reason
    )
    return web.Response(text="")


async def node_maintenance(request: web.Request) -> web.Response:
    enable = _enable(request)
    await _state(request).agent_checks.node_maintenance(enable, request.query.get("reason", ""))
    return web.Response(text="")


def _doc(request: web.Request, h: Health) -> dict[str, Any]:
    state = _state(request)
    return {
        "AggregatedStatus": h.status,
        "Service": views.agent_service(state.catalog, h.instance),
        "Checks": [views.service_check(state.catalog, c) for c in h.checks],
    }


def _answer(request: web.Request, status: str, body: Any) -> web.Response:
    code = HTTP_CODE[status]
    if request.query.get("format") == "text":
        return web.Response(status=code, text=status)
    from loom.server.http import _json

    response = _json(body)
    response.set_status(code)
    return response


async def health_by_id(request: web.Request) -> web.Response:
    sid = request.match_info["id"]
    found = _state(request).agent_checks.health_by_id(sid)
    if found is None:
        text = f"ServiceId {sid} not found"
        if request.query.get("format") == "text":
            return web.Response(status=404, text=text)
        raise NotFound(text)
    if (authz := authorizer(request)) is not None:
        authz.check("service", Access.READ, found.instance.service)
    return _answer(request, found.status, _doc(request, found))


async def health_by_name(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    ns = request.query.get("ns") or "default"
    found = _state(request).agent_checks.health_by_name(ns, name)
    shown = visible(request, found, lambda a, h: can_read_service(a, h.instance))
    if not shown:
        text = f"ServiceName {name} Not Found"
        if request.query.get("format") == "text":
            return web.Response(status=404, text=text)
        raise NotFound(text)
    return _answer(request, worst(h.status for h in shown), [_doc(request, h) for h in shown])


def _reported(body: Any) -> dict[str, tuple[str, str]]:
    """A heartbeat's ``Checks``: ``{"<CheckID>": {"Status": ..., "Output": ...}}``."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    checks = body.get("Checks") or {}
    if not isinstance(checks, dict):
        raise ValidationError("Checks: must be an object of check IDs")
    out = {}
    for cid, doc in checks.items():
        status = doc.get("Status") if isinstance(doc, dict) else None
        if status not in CHECK_STATES:
            raise ValidationError(f"Checks.{cid}.Status: must be one of {', '.join(CHECK_STATES)}")
        output = doc.get("Output", "")
        if not isinstance(output, str):
            raise ValidationError(f"Checks.{cid}.Output: must be a string")
        out[str(cid)] = (str(status), output)
    return out


async def dataplane_heartbeat(request: web.Request) -> web.Response:
    """``PUT /v1/loom/dataplane/:proxy-id/heartbeat``: the dataplane running that proxy's
    checks is alive, and sees them as its body says (``loom.domain.liveness``)."""
    from loom.server.http import _body, _json

    agent_checks = _state(request).agent_checks
    reported = _reported(await _body(request))
    ignored = await agent_checks.heartbeat(request.match_info["id"], reported)
    return _json({"IntervalSeconds": agent_checks.beats.interval_s, "Ignored": ignored})


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_put("/v1/loom/dataplane/{id}/heartbeat", dataplane_heartbeat)
    r.add_put("/v1/agent/check/register", check_register)
    r.add_put("/v1/agent/check/deregister/{id}", check_deregister)
    r.add_get("/v1/agent/health/service/id/{id}", health_by_id)
    r.add_get("/v1/agent/health/service/name/{name}", health_by_name)
    r.add_put("/v1/agent/service/maintenance/{id}", service_maintenance)
    r.add_put("/v1/agent/maintenance", node_maintenance)
