"""The HTTP API: Consul's paths and JSON shapes, so existing Consul clients work.

Handlers parse the request, call the application services and format with ``views``. The one
place errors become responses is ``_errors``: validation -> 400, unknown -> 404, conflict ->
409, anything else -> 500 with one line (the traceback goes to the server log, never to the
client). GET endpoints are blocking queries: ``?index=N&wait=30s`` returns when the data's
index passes N, with the index in ``X-Consul-Index``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from loom.acl.errors import AclError, AclNotFound, PermissionDenied
from loom.bexpr import Filter, FilterError
from loom.ca.csr import CsrError
from loom.ca.errors import CaNotInitialized
from loom.control import reads
from loom.control.catalog import tag_union
from loom.control.errors import Conflict, NotFound
from loom.control.nametable import build_name_table, name_table_text
from loom.control.selfreg import is_server_service
from loom.control.snapshot import MESH_TABLES
from loom.control.state import State
from loom.domain.config_entries import KINDS
from loom.domain.fields import (
    MAX_JSON_DEPTH,
    Fields,
    ValidationError,
    check_json_text,
    check_name,
)
from loom.errors import LoomError
from loom.ratelog import RateLimitedLog
from loom.server import (
    acl_http,
    agent_http,
    catalog_http,
    checks_http,
    explain_http,
    fedca_http,
    federation_http,
    filters,
    intentions_http,
    kv_http,
    metrics_http,
    query,
    query_http,
    replication_http,
    session_http,
    snapshot_http,
    ui_http,
    views,
)
from loom.server.acl_reads import (
    can_read_agent_check,
    can_read_check,
    can_read_entry,
    can_read_instance,
    can_read_intention,
    can_read_service,
    mark_filtered,
    visible,
)
from loom.server.blocking import WATCHERS, Watchers, park, wait_params
from loom.server.guard import authorizer, csr_of, enforce, vetter
from loom.server.wan import NoPathToDatacenter
from loom.store import StoreConflict
from loom.store.archive import ArchiveError
from loom.store.tables import CA, CATALOG_TABLES, CONFIG_TABLES
from loom.xds.translate import build_resources
from loom.xds.translate.names import TYPE_CLUSTER, TYPE_ENDPOINTS, TYPE_LISTENER
from loom.xds.view import collect_inputs

log = logging.getLogger("loom.server.http")
failures = RateLimitedLog(log)  # a bug a client can trigger at will must not flood the log
Doc = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE: web.AppKey[State] = web.AppKey("state", State)


CONFLICT_RETRIES = 10


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            return await handler(request)
        except StoreConflict as exc:
            # Several servers share etcd and another one wrote first: re-run the request
            # against the caught-up view (handlers validate from the view; aiohttp keeps the
            # body for the re-read).
            if attempt < CONFLICT_RETRIES:
                await asyncio.sleep(random.uniform(0.0005, 0.002) * (attempt + 1))
                continue
            return web.Response(status=409, text=f"{exc}\n")
        except web.HTTPException:
            raise
        except (ValidationError, CsrError) as exc:
            return web.Response(status=400, text=f"Invalid request: {exc}\n")
        except CaNotInitialized as exc:  # a secondary's CA before the primary signed for it
            return web.Response(status=503, text=f"{exc}\n", headers={"Retry-After": "1"})
        except FilterError as exc:  # a ?filter= expression, worded as Consul words it
            text = f"Failed to create boolean expression evaluator: {exc}\n"
            return web.Response(status=400, text=text)
        except (PermissionDenied, AclNotFound) as exc:
            return web.Response(status=403, text=f"{exc}\n")
        except AclError as exc:  # a malformed ACL record or rule
            return web.Response(status=400, text=f"{exc}\n")
        except NoPathToDatacenter:  # loom.server.wan: no server of that DC answered
            return web.Response(status=500, text=query.NO_PATH)
        except ArchiveError as exc:  # a snapshot file that cannot be restored
            return web.Response(status=400, text=f"Invalid snapshot: {exc}\n")
        except NotFound as exc:
            return web.Response(status=404, text=f"{exc}\n")
        except Conflict as exc:
            return web.Response(status=409, text=f"{exc}\n")
        except LoomError as exc:
            failures.error("http 500", "%s %s failed: %s", request.method, request.path, exc)
            return web.Response(status=500, text=f"{exc}\n")
        except Exception:
            failures.error("http 500", "%s %s failed", request.method, request.path, exc_info=True)
            return web.Response(status=500, text="internal error (see the server log)\n")
    raise AssertionError("unreachable")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"body: malformed JSON ({exc})") from exc
    except RecursionError:
        raise ValidationError(f"body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_json_text(body)
    return body


def _json(data: Any, index: int | None = None) -> web.Response:
    headers = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
    if index is not None:
        headers["X-Consul-Index"] = str(index)
    return web.Response(
        text=json.dumps(data, indent=None), content_type="application/json", headers=headers
    )


async def _blocking(request: web.Request, tables: Iterable[str]) -> int:
    """Wait as a Consul blocking query asks, on store tables; returns the index to report."""
    state = request.app[STATE]
    names = tuple(tables)
    params = wait_params(request)
    if params is None or params[0] <= 0:
        return state.store.table_index(names)
    after, timeout = params
    moved = await park(request, lambda: state.store.wait(names, after, timeout))
    return state.store.table_index(names) if moved is None else moved


def _retrieve(task: asyncio.Future[web.StreamResponse]) -> None:
    if not task.cancelled():
        task.exception()  # a write whose client left: its outcome is in the store, not lost


@web.middleware
async def _uncancellable_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Handler cancellation is for blocking queries: anything else (a write above all) runs
    to its end even when its client disconnects, so no write is cut off halfway."""
    if request.method == "GET" and ("index" in request.query or "hash" in request.query):
        response = await handler(request)
    else:
        task = asyncio.ensure_future(handler(request))
        task.add_done_callback(_retrieve)
        response = await asyncio.shield(task)
    if request.path.startswith("/v1/loom/"):
        response.headers["X-Loom-Blocking-Queries"] = str(request.app[WATCHERS].count)
    return response


async def _end_watchers(app: web.Application) -> None:
    log.info("shutting down: ending %d blocking queries", app[WATCHERS].count)
    app[WATCHERS].close()


def _ns(request: web.Request) -> str:
    return query.namespace(request)


def _flag(request: web.Request, name: str) -> bool:
    return name in request.query and request.query[name] not in ("false", "0")


def _ok() -> web.Response:
    return _json(True)


def _kept(flt: Filter | None, docs: list[Doc]) -> list[Doc]:
    """The documents a ``?filter=`` keeps (all of them without one)."""
    return docs if flt is None else [d for d in docs if flt.matches(d)]


def _kept_values(flt: Filter | None, docs: dict[str, Doc]) -> dict[str, Doc]:
    """A map answer (agent services, checks) filtered on its values."""
    return docs if flt is None else {k: d for k, d in docs.items() if flt.matches(d)}


# -- agent ---------------------------------------------------------------------------------------


async def agent_services(request: web.Request) -> web.Response:
    state = request.app[STATE]
    flt = filters.request_filter(request, filters.AGENT_SERVICE)
    index = await _blocking(request, CATALOG_TABLES)
    cat = state.catalog
    local = [d for d in cat.instances_on(state.settings.node) if not is_server_service(d)]
    shown = visible(request, local, can_read_service)
    out = {d.id: views.agent_service(cat, d) for d in shown}
    return _json(_kept_values(flt, out), index)


async def agent_register(request: web.Request) -> web.Response:
    await request.app[STATE].catalog.agent_register(await _body(request), vetter(request))
    return web.Response(text="")


async def agent_deregister(request: web.Request) -> web.Response:
    found = request.app[STATE].catalog.find(request.match_info["id"], _ns(request))
    if found is not None and is_server_service(found):  # the server's, not the agent's
        raise NotFound(f"unknown service ID {found.id!r}")
    await request.app[STATE].catalog.agent_deregister(request.match_info["id"], _ns(request))
    return web.Response(text="")


def _check_update(status: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        output = request.query.get("note", "")
        await request.app[STATE].catalog.update_check(request.match_info["id"], status, output)
        return web.Response(text="")

    return handle


async def check_update(request: web.Request) -> web.Response:
    f = Fields(await _body(request), "")
    status = f.one_of("Status", ("passing", "warning", "critical"))
    await request.app[STATE].catalog.update_check(
        request.match_info["id"], status, f.text("Output")
    )
    return web.Response(text="")


async def agent_checks(request: web.Request) -> web.Response:
    state = request.app[STATE]
    flt = filters.request_filter(request, filters.HEALTH_CHECK)
    index = await _blocking(request, CATALOG_TABLES)
    checks = visible(request, state.catalog.checks_on(state.settings.node), can_read_agent_check)
    out = {c.check_id: views.service_check(state.catalog, c) for c in checks}
    return _json(_kept_values(flt, out), index)


async def agent_self(request: web.Request) -> web.Response:
    s = request.app[STATE].settings
    return _json(
        {
            "Config": {"Datacenter": s.datacenter, "NodeName": s.node, "Server": True},
            "Member": {"Name": s.node, "Addr": s.node_address, "Status": 1},
        }
    )


# -- catalog -------------------------------------------------------------------------------------


async def catalog_register(request: web.Request) -> web.Response:
    await request.app[STATE].catalog.catalog_register(await _body(request), vetter(request))
    return _ok()


async def catalog_deregister(request: web.Request) -> web.Response:
    await request.app[STATE].catalog.catalog_deregister(await _body(request))
    return _ok()


async def catalog_services(request: web.Request) -> web.Response:
    state = request.app[STATE]
    flt = filters.request_filter(request, filters.CATALOG_SERVICE)
    index = await _blocking(request, CATALOG_TABLES)
    cat, ns = state.catalog, _ns(request)
    tags = cat.service_tags(ns)
    names = set(visible(request, tags, lambda a, name: a.service_read(name)))
    meta = query.node_meta(request)
    if flt is not None or meta:  # the readable services with a kept instance, with its tags
        shown = reads.select(cat, (d for d in cat.instances_in(ns) if d.service in names), (), meta)
        tags = tag_union(
            d for d in shown if flt is None or flt.matches(views.catalog_service(cat, d))
        )
    return _json({k: v for k, v in tags.items() if k in names}, index)


async def catalog_service(request: web.Request) -> web.Response:
    state = request.app[STATE]
    index = await _blocking(request, CATALOG_TABLES)
    name, ns = request.match_info["name"], _ns(request)
    flt = filters.request_filter(request, filters.CATALOG_SERVICE)
    cat = state.catalog
    found = reads.select(
        cat, cat.instances_of(ns, name), query.tags(request), query.node_meta(request)
    )
    out = [views.catalog_service(cat, d) for d in visible(request, found, can_read_instance)]
    return _json(_kept(flt, out), index)


async def catalog_nodes(request: web.Request) -> web.Response:
    state = request.app[STATE]
    flt = filters.request_filter(request, filters.NODE)
    index = await _blocking(request, CATALOG_TABLES)
    meta = query.node_meta(request)
    found = [n for n in state.catalog.nodes() if reads.meta_matches(n, meta)]
    out = [
        views.indexed_node(state.catalog, n)
        for n in visible(request, found, lambda a, n: a.node_read(n.node))
    ]
    return _json(_kept(flt, out), index)


async def catalog_datacenters(request: web.Request) -> web.Response:
    return _json(request.app[STATE].federation.datacenters())


# -- health --------------------------------------------------------------------------------------


def _health(request: web.Request, index: int, connect: bool, flt: Filter | None) -> list[Doc]:
    cat = request.app[STATE].catalog
    found = cat.health(_ns(request), request.match_info["name"], connect, _flag(request, "passing"))
    tags, meta = query.tags(request), query.node_meta(request)
    if tags or meta:
        picked = {id(d) for d in reads.select(cat, (d for d, _ in found), tags, meta)}
        found = [hit for hit in found if id(hit[0]) in picked]
    shown = visible(request, found, lambda a, hit: can_read_instance(a, hit[0]))
    return _kept(flt, [views.health_entry(cat, d, checks) for d, checks in shown])


async def health_service(request: web.Request) -> web.Response:
    flt = filters.request_filter(request, filters.HEALTH_ENTRY)
    index = await _blocking(request, CATALOG_TABLES)
    return _json(_health(request, index, False, flt), index)


async def health_connect(request: web.Request) -> web.Response:
    flt = filters.request_filter(request, filters.HEALTH_ENTRY)
    index = await _blocking(request, CATALOG_TABLES)
    return _json(_health(request, index, True, flt), index)


async def health_checks(request: web.Request) -> web.Response:
    state = request.app[STATE]
    flt = filters.request_filter(request, filters.HEALTH_CHECK)
    index = await _blocking(request, CATALOG_TABLES)
    name, ns = request.match_info["name"], _ns(request)
    checks = visible(request, state.catalog.service_checks(ns, name), can_read_check)
    out = [views.service_check(state.catalog, c) for c in checks]
    return _json(_kept(flt, out), index)


# -- intentions ----------------------------------------------------------------------------------


def _pair(request: web.Request) -> tuple[str, str]:
    src, dst = request.query.get("source"), request.query.get("destination")
    if not src or not dst:
        raise ValidationError("source and destination query parameters are required")
    return src, dst


async def intention_exact_get(request: web.Request) -> web.Response:
    state = request.app[STATE]
    index = await _blocking(request, CONFIG_TABLES)
    src, dst = _pair(request)
    found = state.configs.find_exact(src, dst)
    if found is None:
        raise NotFound(f"no intention from {src} to {dst}")
    return _json(views.intention(found, index), index)


async def intention_exact_put(request: web.Request) -> web.Response:
    src, dst = _pair(request)
    await request.app[STATE].configs.upsert_exact(src, dst, await _body(request))
    return _ok()


async def intention_exact_delete(request: web.Request) -> web.Response:
    src, dst = _pair(request)
    await request.app[STATE].configs.delete_exact(src, dst)
    return _ok()


async def intention_list(request: web.Request) -> web.Response:
    state = request.app[STATE]
    flt = filters.request_filter(request, filters.INTENTION)
    index = await _blocking(request, CONFIG_TABLES)
    shown = visible(request, state.configs.intentions(), can_read_intention)
    return _json(_kept(flt, [views.intention(i, index) for i in shown]), index)


async def intention_match(request: web.Request) -> web.Response:
    state = request.app[STATE]
    index = await _blocking(request, CONFIG_TABLES)
    found = state.configs.match(request.query.get("by", ""), request.query.getall("name", []))
    out = {
        ref: [views.intention(i, index) for i in visible(request, hits, can_read_intention)]
        for ref, hits in found.items()
    }
    return _json(out, index)


# -- config entries ------------------------------------------------------------------------------


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise NotFound(f"unknown config entry kind {kind!r} (one of {', '.join(KINDS)})")
    return kind


def _cas(request: web.Request) -> int | None:
    cas_raw = request.query.get("cas")
    try:
        return int(cas_raw) if cas_raw is not None else None
    except ValueError:
        raise ValidationError(f"cas: {cas_raw!r} is not an integer") from None


async def config_put(request: web.Request) -> web.Response:
    cas = _cas(request)
    return _json(await request.app[STATE].configs.write(await _body(request), cas))


async def config_get(request: web.Request) -> web.Response:
    state = request.app[STATE]
    index = await _blocking(request, CONFIG_TABLES)
    kind, name = _kind(request), request.match_info["name"]
    entry = state.configs.get(kind, name, _ns(request))
    if entry is None:
        raise NotFound(f"Config entry not found for {kind!r} / {name!r}")
    return _json(views.config_entry(entry), index)


async def config_list(request: web.Request) -> web.Response:
    state = request.app[STATE]
    index = await _blocking(request, CONFIG_TABLES)
    entries = visible(request, state.configs.entries(_kind(request)), can_read_entry)
    return _json([views.config_entry(e) for e in entries], index)


async def config_delete(request: web.Request) -> web.Response:
    """With ``?cas=N``: true or false, deleted only at that ModifyIndex (Consul's check-and-set
    delete); without it, unconditional."""
    kind, cas = _kind(request), _cas(request)
    configs = request.app[STATE].configs
    deleted = await configs.delete(kind, request.match_info["name"], _ns(request), cas)
    return _json(deleted) if cas is not None else _ok()


# -- CA ------------------------------------------------------------------------------------------


async def ca_roots(request: web.Request) -> web.Response:
    state = request.app[STATE]
    index = await _blocking(request, (CA.name,))
    return _json(fedca_http.roots_body(state.certs, index), index)


async def ca_configuration_get(request: web.Request) -> web.Response:
    config = request.app[STATE].ca_config.read()
    return _json(config, config["ModifyIndex"])


async def ca_configuration_put(request: web.Request) -> web.Response:
    await request.app[STATE].ca_config.update(await _body(request))
    return _json(True)


async def ca_leaf(request: web.Request) -> web.Response:
    state = request.app[STATE]
    service = check_name(request.match_info["service"], "service")
    leaf = state.certs.leaf(service, _ns(request))
    return _json(views.issued_cert(leaf, _ns(request)), state.store.index)


async def ca_sign(request: web.Request) -> web.Response:
    """Loom's own: sign a workload's CSR (its key stays with it); the guard has already read
    the CSR and checked ``service:write`` on the service it names."""
    state = request.app[STATE]
    csr = await csr_of(request)
    leaf = await state.certs.sign_csr(csr)
    return _json(views.issued_cert(leaf, csr.identity.namespace), state.store.index)


# -- Loom's own -----------------------------------------------------------------------------------


async def proxies(request: web.Request) -> web.Response:
    """The proxies holding an xDS stream now: what each was sent, ACKed and NACKed, and
    whether it has what the mesh says now (``loom proxy status``, ``loom wait proxy``)."""
    return _json(request.app[STATE].proxies.statuses())


async def proxy_config(request: web.Request) -> web.Response:
    """What the xDS server would send proxy ID now (``loom proxy config``): its listeners,
    clusters and endpoints as the translator builds them, Envoy's JSON."""
    proxy_id = request.match_info["id"]
    inputs = collect_inputs(request.app[STATE].snapshot(), proxy_id)
    if inputs is None:
        raise NotFound(
            f"unknown proxy {proxy_id!r} (not a registered connect-proxy or mesh-gateway)"
        )
    res = build_resources(inputs)
    return _json({
        "ID": proxy_id,
        "Service": inputs.service,
        "Listeners": [v for _, v in sorted(res[TYPE_LISTENER].items())],
        "Clusters": [v for _, v in sorted(res[TYPE_CLUSTER].items())],
        "Endpoints": [v for _, v in sorted(res[TYPE_ENDPOINTS].items())],
    })  # fmt: skip


async def dns_table(request: web.Request) -> web.Response:
    """Every DNS proxy watches this: the table is built once per index and shared."""
    state = request.app[STATE]
    index = await _blocking(request, MESH_TABLES)
    text = name_table_text(state.snapshot())
    authz = authorizer(request)
    if authz is not None and not authz.service_read_all():
        table = build_name_table(state.snapshot())
        for key, name_of in (
            ("Services", "Name"), ("ExternalHosts", "Service"), ("Queries", "Service")
        ):
            if key in table:
                table[key] = [e for e in table[key] if authz.service_read(e[name_of])]
        mark_filtered(request)
        text = json.dumps(table)
    return web.Response(
        text=text,
        content_type="application/json",
        headers={"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true"},
    )


# -- status --------------------------------------------------------------------------------------


async def status_leader(request: web.Request) -> web.Response:
    return _json(f"{request.app[STATE].settings.node_address}:8300")


async def status_peers(request: web.Request) -> web.Response:
    return _json([f"{request.app[STATE].settings.node_address}:8300"])


def _datacenter(request: web.Request) -> str:
    return request.app[STATE].settings.datacenter


def _known(request: web.Request, dc: str) -> bool:
    return bool(request.app[STATE].federation.servers(dc))


def build_app(state: State) -> web.Application:
    app = web.Application(
        middlewares=[
            _uncancellable_writes,
            _errors,
            query.checker(_datacenter, _known),
            replication_http.forward_writes,  # a secondary's writes of replicated kinds
            enforce,
        ],
        client_max_size=4 * 1024 * 1024,
    )
    app[STATE] = state
    app[WATCHERS] = Watchers()
    app.on_shutdown.append(_end_watchers)
    r = app.router
    r.add_get("/v1/agent/services", agent_services)
    r.add_put("/v1/agent/service/register", agent_register)
    r.add_put("/v1/agent/service/deregister/{id}", agent_deregister)
    for status, verb in (("passing", "pass"), ("warning", "warn"), ("critical", "fail")):
        r.add_put(f"/v1/agent/check/{verb}/{{id}}", _check_update(status))
    r.add_put("/v1/agent/check/update/{id}", check_update)
    r.add_get("/v1/agent/checks", agent_checks)
    r.add_get("/v1/agent/self", agent_self)
    r.add_put("/v1/catalog/register", catalog_register)
    r.add_put("/v1/catalog/deregister", catalog_deregister)
    r.add_get("/v1/catalog/services", catalog_services)
    r.add_get("/v1/catalog/service/{name}", catalog_service)
    r.add_get("/v1/catalog/nodes", catalog_nodes)
    r.add_get("/v1/catalog/datacenters", catalog_datacenters)
    r.add_get("/v1/health/service/{name}", health_service)
    r.add_get("/v1/health/connect/{name}", health_connect)
    r.add_get("/v1/health/checks/{name}", health_checks)
    r.add_get("/v1/connect/intentions/exact", intention_exact_get)
    r.add_put("/v1/connect/intentions/exact", intention_exact_put)
    r.add_delete("/v1/connect/intentions/exact", intention_exact_delete)
    r.add_get("/v1/connect/intentions/check", intentions_http.intention_check)
    r.add_get("/v1/connect/intentions/match", intention_match)
    r.add_get("/v1/connect/intentions", intention_list)
    r.add_put("/v1/config", config_put)
    r.add_get("/v1/config/{kind}", config_list)
    r.add_get("/v1/config/{kind}/{name}", config_get)
    r.add_delete("/v1/config/{kind}/{name}", config_delete)
    r.add_get("/v1/connect/ca/roots", ca_roots)
    r.add_get("/v1/agent/connect/ca/roots", ca_roots)
    r.add_get("/v1/connect/ca/configuration", ca_configuration_get)
    r.add_put("/v1/connect/ca/configuration", ca_configuration_put)
    r.add_get("/v1/agent/connect/ca/leaf/{service}", ca_leaf)
    r.add_put("/v1/loom/connect/ca/sign", ca_sign)
    r.add_get("/v1/loom/dns-table", dns_table)
    r.add_get("/v1/loom/proxies", proxies)
    r.add_get("/v1/loom/proxies/{id}/config", proxy_config)
    r.add_get("/v1/status/leader", status_leader)
    r.add_get("/v1/status/peers", status_peers)
    acl_http.add_routes(r)
    checks_http.add_routes(r)
    snapshot_http.add_routes(r)
    kv_http.add_routes(r)
    session_http.add_routes(r)
    query_http.add_routes(r)
    catalog_http.add_routes(r)
    agent_http.add_routes(r)
    intentions_http.add_routes(r)  # after /v1/connect/intentions/exact, check and match
    explain_http.add_routes(r)
    fedca_http.add_routes(r)
    metrics_http.add_routes(r)
    federation_http.add_routes(r)
    replication_http.add_routes(r)
    if state.settings.ui:
        ui_http.add_routes(r)
    return app


__all__ = ["STATE", "WATCHERS", "Watchers", "build_app"]
