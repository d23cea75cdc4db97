"""``GET /v1/loom/ui/metrics``: the web UI's request rate, error rate and p99, from Prometheus.

With ``loom server --ui-metrics-provider prometheus --ui-metrics-url URL`` the server asks
that Prometheus a fixed set of PromQL queries over the sidecars' merged metrics (Envoy's
stats joined to ``loom_dataplane_info`` for the service each sidecar fronts) and answers one
JSON document: per service (its inbound traffic, at its sidecar's public listener) and per
edge (a source's sidecar's traffic to a destination's cluster). The browser never talks to
Prometheus and never sends PromQL: the queries are constants here, so there is nothing to
inject and Prometheus need not be reachable from the browser, nor be same-origin. With ACLs
on the answer holds only the services the token has ``service:read`` on (an edge needs both
ends), marked filtered as any list; an unknown token is refused by the middleware. Without a
provider the answer is an empty document with ``Provider: ""`` (the UI then hides metrics).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from loom.server import acl_reads, guard
from loom.server.errors import ServerError

METRICS_PATH = "/v1/loom/ui/metrics"
WINDOW = "1m"
"""The rate window: short, so the UI follows live traffic (scrapes are seconds apart)."""
_TIMEOUT_S = 5.0
_JOIN = "* on(instance) group_left(service) loom_dataplane_info"
_IN = 'envoy_http_conn_manager_prefix="public_listener"'
_OUT = 'consul_destination_namespace!=""'  # the mesh's clusters (their names are tagged)

QUERIES: Mapping[str, str] = {
    "service_rate": (
        f"sum by (service) (rate(envoy_http_downstream_rq_total{{{_IN}}}[{WINDOW}]) {_JOIN})"
    ),
    "service_errors": (
        "sum by (service) (rate(envoy_http_downstream_rq_xx"
        f"{{{_IN},envoy_response_code_class=\"5\"}}[{WINDOW}]) {_JOIN})"
    ),
    "service_p99": (
        "histogram_quantile(0.99, sum by (service, le) "
        f"(rate(envoy_http_downstream_rq_time_bucket{{{_IN}}}[{WINDOW}]) {_JOIN}))"
    ),
    "edge_rate": (
        "sum by (service, envoy_cluster_name) "
        f"(rate(envoy_cluster_upstream_rq_total{{{_OUT}}}[{WINDOW}]) {_JOIN})"
    ),
    "edge_errors": (
        "sum by (service, envoy_cluster_name) (rate(envoy_cluster_upstream_rq_xx"
        f"{{{_OUT},envoy_response_code_class=\"5\"}}[{WINDOW}]) {_JOIN})"
    ),
    "edge_p99": (
        "histogram_quantile(0.99, sum by (service, envoy_cluster_name, le) "
        f"(rate(envoy_cluster_upstream_rq_time_bucket{{{_OUT}}}[{WINDOW}]) {_JOIN}))"
    ),
}  # fmt: skip
"""Each a vector by ``service`` (and ``envoy_cluster_name``, the destination, for edges);
rates per second, latencies in milliseconds (Envoy's ``rq_time`` unit)."""

Doc = dict[str, Any]
Vector = list[tuple[dict[str, str], float]]


class MetricsProviderError(ServerError):
    """Prometheus did not answer, or answered something that is not a vector."""


def _number(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def _stats(rate: float | None, errors: float | None, p99: float | None) -> Doc:
    ratio = (errors or 0.0) / rate if rate else 0.0
    return {"RequestRate": rate or 0.0, "ErrorRate": ratio, "P99Ms": p99}


def fold(vectors: Mapping[str, Vector]) -> Doc:
    """The answers of ``QUERIES`` as the endpoint's document (pure). ``ErrorRate`` is the
    share of requests answered 5xx (0 to 1); ``P99Ms`` is None without requests. An edge is
    observed traffic: one with no request in the window is left out."""
    by: dict[str, dict[tuple[str, ...], float | None]] = {}
    for name, vector in vectors.items():
        keys = ("service", "envoy_cluster_name") if name.startswith("edge") else ("service",)
        by[name] = {tuple(m.get(k, "") for k in keys): v for m, v in vector}
    services = {
        key[0]: _stats(rate, by.get("service_errors", {}).get(key),
                       by.get("service_p99", {}).get(key))
        for key, rate in by.get("service_rate", {}).items() if key[0]
    }  # fmt: skip
    edges = [
        {"Source": key[0], "Destination": key[1],
         **_stats(rate, by.get("edge_errors", {}).get(key), by.get("edge_p99", {}).get(key))}
        for key, rate in sorted(by.get("edge_rate", {}).items()) if key[0] and key[1] and rate
    ]  # fmt: skip
    return {"Services": services, "Edges": edges}


def parse_vector(body: object) -> Vector:
    """A Prometheus ``/api/v1/query`` answer's instant vector (pure)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise MetricsProviderError(f"Prometheus refused the query: {str(body)[:200]}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise MetricsProviderError("Prometheus answered no instant vector")
    out: Vector = []
    for r in data.get("result") or []:
        value = _number((r.get("value") or [None, None])[1])
        if value is not None:
            out.append(({str(k): str(v) for k, v in (r.get("metric") or {}).items()}, value))
    return out


async def query_all(base_url: str) -> dict[str, Vector]:
    """Every query of ``QUERIES``, concurrently, from the Prometheus at ``base_url``."""
    url = base_url.rstrip("/") + "/api/v1/query"
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one(promql: str) -> Vector:
                async with session.get(url, params={"query": promql}) as resp:
                    return parse_vector(json.loads(await resp.text()))

            answers = await asyncio.gather(*(one(q) for q in QUERIES.values()))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise MetricsProviderError(f"cannot query Prometheus at {base_url}: {exc}") from exc
    return dict(zip(QUERIES, answers, strict=True))


async def ui_metrics(request: web.Request) -> web.Response:
    settings = guard.state_of(request).settings
    doc: Doc = {"Provider": "", "Window": WINDOW, "Services": {}, "Edges": []}
    if settings.ui_metrics_provider and settings.ui_metrics_url:
        try:
            found = fold(await query_all(settings.ui_metrics_url))
        except MetricsProviderError as exc:
            return web.Response(status=502, text=f"metrics provider: {exc}\n")
        names = acl_reads.visible(request, found["Services"], lambda r, n: r.service_read(n))
        edges = acl_reads.visible(
            request, found["Edges"],
            lambda r, e: r.service_read(e["Source"]) and r.service_read(e["Destination"]),
        )  # fmt: skip
        doc.update(Provider=settings.ui_metrics_provider, Edges=edges,
                   Services={n: found["Services"][n] for n in names})  # fmt: skip
    return web.Response(text=json.dumps(doc), content_type="application/json")


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get(METRICS_PATH, ui_metrics)


__all__ = ["METRICS_PATH", "QUERIES", "add_routes", "fold", "parse_vector"]
