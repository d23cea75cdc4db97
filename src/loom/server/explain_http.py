"""``GET /v1/loom/intentions/explain``: why a source may or may not reach a destination.

Loom's own endpoint (Consul has none): ``?source=[NS/]NAME&destination=[NS/]NAME`` and
optionally ``&method=M&path=P`` for L7 intentions. The answer is ``loom.xds.explain`` over the
current mesh snapshot, so it is computed from the same inputs and translators as the Envoy
configuration pushed to the sidecars. It needs ``intention:read`` on the destination, as
reading that destination's intentions does (``guard.NEEDS``). The web UI's Explain page and
``loom intention explain`` both read it.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from loom.control.configs import split_ref
from loom.domain.fields import ValidationError
from loom.server import guard
from loom.xds.explain import Explanation, explain

Doc = dict[str, Any]
EXPLAIN_PATH = "/v1/loom/intentions/explain"
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)


def explanation_doc(e: Explanation) -> Doc:
    """The JSON shape of an explanation (Consul-style field names)."""
    i = e.intention
    return {
        "Source": f"{e.source_ns}/{e.source}",
        "Destination": f"{e.destination_ns}/{e.destination}",
        "Request": {"Method": e.method, "Path": e.path} if e.method or e.path else None,
        "Allowed": e.allowed,
        "Reason": e.reason,
        "Layer": e.layer,
        "DefaultPolicy": "allow" if e.default_allow else "deny",
        "Intention": None
        if i is None
        else {
            "SourceNS": i.source_ns,
            "SourceName": i.source,
            "DestinationNS": i.destination_ns,
            "DestinationName": i.destination,
            "Action": i.action,
            "Permissions": len(i.permissions),
            "Precedence": i.precedence,
            "Description": i.description,
        },
        "Upstreams": [
            {"Proxy": u.proxy_id, "Kind": u.kind, "Address": u.address} for u in e.upstreams
        ],
        "Rbac": [
            {
                "Proxy": v.proxy_id,
                "Filter": v.filter,
                "Allowed": v.allowed,
                "Policy": v.policy,
                "Policies": list(v.policies),
                "Agrees": v.agrees,
            }
            for v in e.rbac
        ],
        "Notes": list(e.notes),
    }


async def intention_explain(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    src, dst = request.query.get("source"), request.query.get("destination")
    if not src or not dst:
        raise ValidationError("source and destination query parameters are required")
    sns, sname = split_ref(src, "source")
    dns, dname = split_ref(dst, "destination")
    if "*" in (sns, sname, dns, dname):
        raise ValidationError("explain names one source and one destination: no wildcards")
    method = request.query.get("method", "").strip().upper()
    if method and method not in METHODS:
        raise ValidationError(f"method: {method!r} is not an HTTP method")
    path = request.query.get("path", "")
    if path and not path.startswith("/"):
        raise ValidationError(f"path: {path!r} must start with /")
    view = state.snapshot()
    doc = explanation_doc(explain(view, sns, sname, dns, dname, method, path))
    return web.Response(
        text=json.dumps(doc),
        content_type="application/json",
        headers={"X-Consul-Index": str(view.mesh_index), "X-Consul-KnownLeader": "true"},
    )


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get(EXPLAIN_PATH, intention_explain)


__all__ = ["EXPLAIN_PATH", "add_routes", "explanation_doc"]
