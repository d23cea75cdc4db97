"""The agent endpoints about the server itself, and one service with hash-based blocking.

``GET /v1/agent/members`` (the server as the one member of its gossip pool, in Consul's
shape), ``/v1/agent/version``, ``/v1/agent/host`` (``hostinfo``), ``/v1/agent/metrics``
(Consul's JSON of gauges, counters and samples; here only gauges Loom can state truly: catalog
sizes, blocking queries in flight, the store index) and ``/v1/agent/service/:id``, whose
answer carries a ``ContentHash`` (also the ``X-Consul-ContentHash`` header): with
``?hash=H`` the request waits (up to ``?wait=``) until the service's answer hashes to
something else, as Consul's hash-based blocking queries do. The hash is of the answer itself
(SHA-256 of its canonical JSON), so it is the same on every server and across restarts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from aiohttp import web

import loom
from loom.acl.rules import Access
from loom.control.errors import NotFound
from loom.control.selfreg import is_server_service
from loom.control.state import State
from loom.server import hostinfo, views
from loom.server.acl_reads import visible
from loom.server.blocking import WATCHERS, park, shutting_down, timeout_of
from loom.server.guard import authorizer
from loom.store.tables import CATALOG_TABLES

Doc = dict[str, Any]
SERF_LAN_PORT = 8301
SERF_WAN_PORT = 8302
SERVER_RPC_PORT = 8300
"""The ports Consul's members report; Loom gossips on none of them (it is the only member),
and 8300 is what ``/v1/status/leader`` names already."""


def _state(request: web.Request) -> State:
    from loom.server.http import STATE

    return request.app[STATE]


def _json(data: Any, index: int | None = None) -> web.Response:
    from loom.server.http import _json as as_json

    return as_json(data, index)


# -- members, version, host, metrics ----------------------------------------------------------


def member(state: State, wan: bool) -> Doc:
    """The server as a Serf member: alive (``Status`` 1), a server (``role`` consul)."""
    s = state.settings
    return {
        "Name": f"{s.node}.{s.datacenter}" if wan else s.node,
        "Addr": s.node_address,
        "Port": SERF_WAN_PORT if wan else SERF_LAN_PORT,
        "Tags": {
            "role": "consul",
            "dc": s.datacenter,
            "port": str(SERVER_RPC_PORT),
            "build": loom.__version__,
            "vsn": "2",
            "vsn_min": "2",
            "vsn_max": "3",
        },
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


async def agent_members(request: web.Request) -> web.Response:
    state = _state(request)
    wan = request.query.get("wan", "") not in ("", "0", "false")
    shown = visible(request, [member(state, wan)], lambda a, m: a.node_read(state.settings.node))
    return _json(shown)


async def agent_version(request: web.Request) -> web.Response:
    """Loom's own version (not a Consul version a client could mistake for one it knows)."""
    return _json(
        {
            "HumanVersion": f"loom {loom.__version__}",
            "Version": loom.__version__,
            "Revision": "",
            "BuildDate": "",
            "FIPS": "",
        }
    )


async def agent_host(request: web.Request) -> web.Response:
    data_dir = _state(request).settings.data_dir
    disk = data_dir if data_dir is not None and data_dir.exists() else Path("/")
    return _json(await asyncio.to_thread(hostinfo.collect, disk))


def gauges(request: web.Request) -> list[tuple[str, float]]:
    """The gauges ``/v1/agent/metrics`` reports, by name."""
    state = _state(request)
    cat = state.catalog
    return [
        ("consul.state.nodes", float(len(cat.nodes()))),
        ("consul.state.services", float(len(cat.service_tags("*")))),
        ("consul.state.service_instances", float(len(cat.instances()))),
        ("loom.http.blocking_queries", float(request.app[WATCHERS].count)),
        ("loom.store.index", float(state.store.index)),
        ("loom.acl.login.failed", float(state.login_limit.failed)),
        ("loom.acl.login.rate_limited", float(state.login_limit.limited)),
    ]


def _prometheus(found: list[tuple[str, float]]) -> str:
    lines = []
    for name, value in found:
        metric = name.replace(".", "_")
        lines += [f"# TYPE {metric} gauge", f"{metric} {value:g}"]
    return "\n".join(lines) + "\n"


async def agent_metrics(request: web.Request) -> web.Response:
    found = gauges(request)
    if request.query.get("format") == "prometheus":
        return web.Response(text=_prometheus(found), content_type="text/plain", charset="utf-8")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    interval = now.replace(second=now.second - now.second % 10)  # Consul's 10 s intervals
    return _json(
        {
            "Timestamp": interval.strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
            "Gauges": [{"Name": n, "Value": v, "Labels": {}} for n, v in found],
            "Points": [],
            "Counters": [],
            "Samples": [],
        }
    )


# -- one service, with its content hash --------------------------------------------------------


def content_hash(doc: Doc) -> str:
    """16 hex digits of SHA-256 over the answer's canonical JSON (without the hash)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _service_doc(request: web.Request) -> Doc:
    state = _state(request)
    sid = request.match_info["id"]
    inst = state.catalog.find(sid, request.query.get("ns"))
    if inst is None or is_server_service(inst):  # the server's, not an agent service
        raise NotFound(f"unknown service ID {sid!r}")
    if (authz := authorizer(request)) is not None:
        authz.check("service", Access.READ, inst.service)
    out = views.agent_service(state.catalog, inst)
    out["ContentHash"] = content_hash(out)
    return out


async def agent_service(request: web.Request) -> web.Response:
    from loom.server.http import _blocking

    state = _state(request)
    want = request.query.get("hash")
    if want is None:
        index = await _blocking(request, CATALOG_TABLES)
        out = _service_doc(request)
    else:
        timeout = timeout_of(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            index = state.store.table_index(CATALOG_TABLES)
            out = _service_doc(request)
            remaining = deadline - loop.time()
            if out["ContentHash"] != want or remaining <= 0 or shutting_down(request):
                break
            await park(
                request,
                lambda index=index, remaining=remaining: state.store.wait(  # type: ignore[misc]
                    CATALOG_TABLES, index, remaining
                ),
            )
    response = _json(out, index)
    response.headers["X-Consul-ContentHash"] = out["ContentHash"]
    return response


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/v1/agent/members", agent_members)
    r.add_get("/v1/agent/version", agent_version)
    r.add_get("/v1/agent/host", agent_host)
    r.add_get("/v1/agent/metrics", agent_metrics)
    r.add_get("/v1/agent/service/{id}", agent_service)


__all__ = ["add_routes", "content_hash", "member"]
