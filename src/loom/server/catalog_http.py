"""Catalog and health reads by node, by check state, of Connect endpoints and of gateways.

``GET /v1/catalog/node/:node``, ``/v1/catalog/node-services/:node``,
``/v1/catalog/connect/:service``, ``/v1/catalog/gateway-services/:gateway``,
``/v1/health/node/:node`` and ``/v1/health/state/:state``, in Consul's shapes. Each is a
blocking query on the catalog tables, takes ``?filter=`` on what it lists, and hides what the
token may not read as the other list endpoints do (``acl_reads.visible``): a node needs
``node:read``, a service ``service:read``, a check both of its node and its service.

Gateways: Loom has no terminating or ingress gateway config entries, so no service is ever
linked to a gateway and ``gateway-services`` answers an empty list (after checking
``service:read`` on the gateway, and the filter, as Consul does).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from loom.bexpr import Filter
from loom.control import reads
from loom.control.state import State
from loom.server import filters, query, views
from loom.server.acl_reads import can_read_check, can_read_instance, can_read_service, visible
from loom.store.tables import CATALOG_TABLES

Doc = dict[str, Any]


def _state(request: web.Request) -> State:
    from loom.server.http import STATE

    return request.app[STATE]


async def _wait(request: web.Request) -> int:
    from loom.server.http import _blocking

    return await _blocking(request, CATALOG_TABLES)


def _json(data: Any, index: int) -> web.Response:
    from loom.server.http import _json as as_json

    return as_json(data, index)


def _kept(flt: Filter | None, docs: list[Doc]) -> list[Doc]:
    return docs if flt is None else [d for d in docs if flt.matches(d)]


def _readable_node(request: web.Request, state: State, name: str) -> Any:
    """The node ``name`` if it exists and the token may read it, else None."""
    node = reads.find_node(state.catalog, name)
    if node is None:
        return None
    shown = visible(request, [node], lambda a, n: a.node_read(n.node))
    return shown[0] if shown else None


def _node_services(request: web.Request, flt: Filter | None, index: int) -> tuple[Any, list[Doc]]:
    state = _state(request)
    cat = state.catalog
    node = _readable_node(request, state, request.match_info["node"])
    if node is None:
        return None, []
    found = reads.node_instances(cat, node.node, query.namespace(request))
    shown = visible(request, found, can_read_service)
    return node, _kept(flt, [views.node_service(cat, d) for d in shown])


async def catalog_node(request: web.Request) -> web.Response:
    """Consul's NodeServices: ``{"Node": ..., "Services": {id: NodeService}}``, or ``null``
    for a node that does not exist (or that the token may not read)."""
    flt = filters.request_filter(request, filters.AGENT_SERVICE)
    index = await _wait(request)
    node, services = _node_services(request, flt, index)
    if node is None:
        return _json(None, index)
    cat = _state(request).catalog
    out = {"Node": views.indexed_node(cat, node), "Services": {s["ID"]: s for s in services}}
    return _json(out, index)


async def catalog_node_services(request: web.Request) -> web.Response:
    """Consul's NodeServiceList: ``{"Node": ..., "Services": [NodeService]}``; an unknown
    (or unreadable) node has a ``null`` Node and no services."""
    flt = filters.request_filter(request, filters.AGENT_SERVICE)
    index = await _wait(request)
    node, services = _node_services(request, flt, index)
    doc = views.indexed_node(_state(request).catalog, node) if node is not None else None
    return _json({"Node": doc, "Services": services}, index)


async def catalog_connect(request: web.Request) -> web.Response:
    """The service's Connect-capable instances (sidecars, Connect-native instances) as
    catalog service nodes; ``?tag=`` (all) and ``?node-meta=`` as ``/v1/catalog/service``."""
    state = _state(request)
    flt = filters.request_filter(request, filters.CATALOG_SERVICE)
    index = await _wait(request)
    cat = state.catalog
    found = reads.connect_instances(cat, query.namespace(request), request.match_info["service"])
    picked = reads.select(cat, found, query.tags(request), query.node_meta(request))
    shown = visible(request, picked, can_read_instance)
    return _json(_kept(flt, [views.catalog_service(cat, d) for d in shown]), index)


async def catalog_gateway_services(request: web.Request) -> web.Response:
    """The services linked to a gateway: none, as Loom has no gateway config entries (the
    guard has checked ``service:read`` on the gateway)."""
    flt = filters.request_filter(request, filters.GATEWAY_SERVICE)
    index = await _wait(request)
    return _json(_kept(flt, []), index)


async def health_node(request: web.Request) -> web.Response:
    """Every check of a node (node-wide and its instances'); none for an unknown node."""
    state = _state(request)
    flt = filters.request_filter(request, filters.HEALTH_CHECK)
    index = await _wait(request)
    found = reads.node_checks(state.catalog, request.match_info["node"], query.namespace(request))
    shown = visible(request, found, can_read_check)
    return _json(_kept(flt, [views.service_check(state.catalog, c) for c in shown]), index)


async def health_state(request: web.Request) -> web.Response:
    """The checks in a state (``any``: all), of nodes with every ``?node-meta=`` pair."""
    state = _state(request)
    flt = filters.request_filter(request, filters.HEALTH_CHECK)
    index = await _wait(request)
    found = reads.checks_in_state(
        state.catalog,
        request.match_info["state"],
        query.namespace(request),
        query.node_meta(request),
    )
    shown = visible(request, found, can_read_check)
    return _json(_kept(flt, [views.service_check(state.catalog, c) for c in shown]), index)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/v1/catalog/node/{node}", catalog_node)
    r.add_get("/v1/catalog/node-services/{node}", catalog_node_services)
    r.add_get("/v1/catalog/connect/{service}", catalog_connect)
    r.add_get("/v1/catalog/gateway-services/{gateway}", catalog_gateway_services)
    r.add_get("/v1/health/node/{node}", health_node)
    r.add_get("/v1/health/state/{state}", health_state)


__all__ = ["add_routes"]
