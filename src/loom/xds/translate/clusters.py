"""Clusters and their endpoints: the local app, mesh upstreams (EDS over mTLS, or an
aggregate cluster over the targets of a ``service-resolver`` failover), the passthrough
cluster and DNS-resolved external hosts.

The local app cluster and each upstream's cluster and endpoints are memoised on what they are
built from (as the listeners are): alike proxies share the very same documents. Documents
returned here may be shared: never change them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from loom.xds.inputs import Endpoint, FailoverCluster, ProxyInputs, Upstream
from loom.xds.translate.listeners import CACHED, socket_address
from loom.xds.translate.names import (
    ADS,
    LOCAL_APP,
    PASSTHROUGH,
    exposed_cluster,
    external_cluster,
    failover_cluster,
)
from loom.xds.translate.tls import upstream_tls

Doc = dict[str, Any]
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
AGGREGATE = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"


def _static(name: str, address: str, port: int, dns: bool = False) -> Doc:
    cluster: Doc = {
        "name": name,
        "type": "LOGICAL_DNS" if dns else "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(address, port)}}]}
            ],
        },
    }
    if dns:
        cluster["dns_lookup_family"] = "V4_ONLY"
    return cluster


def local_app_cluster(inp: ProxyInputs) -> Doc:
    return _local_app_cluster(inp.local_app_address, inp.local_app_port, inp.protocol)


@lru_cache(maxsize=CACHED)
def _local_app_cluster(address: str, port: int, protocol: str) -> Doc:
    cluster = _static(LOCAL_APP, address or "127.0.0.1", port)
    if not port:  # a client-only workload (no port): nothing to forward to
        cluster["load_assignment"]["endpoints"] = []
    if protocol in ("http2", "grpc"):
        cluster["typed_extension_protocol_options"] = {
            HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _timeout(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}s"


def _eds_cluster(name: str, tls_name: str, spiffe_id: str, timeout_ms: int) -> Doc:
    return {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ADS},
        "connect_timeout": _timeout(timeout_ms),
        "transport_socket": upstream_tls(tls_name, spiffe_id),
    }


def _targets(u: Upstream) -> list[FailoverCluster]:
    """The upstream's own target, then its failover targets (one EDS cluster each)."""
    own = FailoverCluster(u.sni, u.spiffe_id, u.endpoints, u.connect_timeout_ms)
    return [own, *u.failover]


@lru_cache(maxsize=CACHED)
def upstream_clusters(u: Upstream) -> tuple[Doc, ...]:
    """One EDS cluster named ``u.sni``; with failover targets, ``u.sni`` is instead an
    ``envoy.clusters.aggregate`` cluster over an EDS cluster per target, in order: Envoy
    sends to the first with healthy endpoints, so when every primary endpoint is gone (its
    EDS is empty) traffic moves on, and it comes back when they return."""
    if not u.failover:
        return (_eds_cluster(u.sni, u.sni, u.spiffe_id, u.connect_timeout_ms),)
    names = [failover_cluster(n, u.sni) for n in range(len(u.failover) + 1)]
    aggregate: Doc = {
        "name": u.sni,
        "connect_timeout": _timeout(u.connect_timeout_ms),
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {"@type": AGGREGATE, "clusters": names},
        },
    }
    members = [
        _eds_cluster(name, t.sni, t.spiffe_id, t.connect_timeout_ms)
        for name, t in zip(names, _targets(u), strict=True)
    ]
    return (aggregate, *members)


def _load_assignment(name: str, endpoints: tuple[Endpoint, ...]) -> Doc:
    lb = [
        {"endpoint": {"address": socket_address(e.address, e.port)}, "health_status": "HEALTHY"}
        for e in sorted(endpoints, key=lambda e: (e.address, e.port))
    ]
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}] if lb else []}


@lru_cache(maxsize=CACHED)
def upstream_endpoints(u: Upstream) -> tuple[Doc, ...]:
    """The load assignment of each EDS cluster ``upstream_clusters(u)`` has."""
    if not u.failover:
        return (_load_assignment(u.sni, u.endpoints),)
    return tuple(
        _load_assignment(failover_cluster(n, u.sni), t.endpoints) for n, t in enumerate(_targets(u))
    )


def build_clusters(inp: ProxyInputs) -> list[Doc]:
    out = [local_app_cluster(inp)]
    for port in sorted({e.local_port for e in inp.expose}):
        out.append(_static(exposed_cluster(port), inp.local_app_address or "127.0.0.1", port))
    seen = set()
    for u in inp.upstreams:
        if u.sni not in seen:
            seen.add(u.sni)
            out.extend(upstream_clusters(u))
    if inp.transparent:
        if not inp.mesh_destinations_only:
            out.append(
                {
                    "name": PASSTHROUGH,
                    "type": "ORIGINAL_DST",
                    "lb_policy": "CLUSTER_PROVIDED",
                    "connect_timeout": "5s",
                }
            )
        for ext in inp.externals:
            for port in sorted(set(ext.ports)):
                out.append(_static(external_cluster(ext.host, port), ext.host, port, dns=True))
    return out


def build_endpoints(inp: ProxyInputs) -> list[Doc]:
    seen: dict[str, tuple[Doc, ...]] = {}
    for u in inp.upstreams:
        seen.setdefault(u.sni, upstream_endpoints(u))
    return [doc for docs in seen.values() for doc in docs]
