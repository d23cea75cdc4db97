"""Clusters and their endpoints: the local app, mesh upstreams (EDS over mTLS), the
passthrough cluster and DNS-resolved external hosts.

The local app cluster and each upstream's cluster and endpoints are memoised on what they are
built from (as the listeners are): alike proxies share the very same documents. Documents
returned here may be shared: never change them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from loom.xds.inputs import ProxyInputs, Upstream
from loom.xds.translate.listeners import CACHED, socket_address
from loom.xds.translate.names import (
    ADS,
    LOCAL_APP,
    PASSTHROUGH,
    exposed_cluster,
    external_cluster,
)
from loom.xds.translate.tls import upstream_tls

Doc = dict[str, Any]
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


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


@lru_cache(maxsize=CACHED)
def upstream_cluster(u: Upstream) -> Doc:
    ms = u.connect_timeout_ms
    return {
        "name": u.sni,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ADS},
        "connect_timeout": f"{ms // 1000}.{ms % 1000:03d}s",
        "transport_socket": upstream_tls(u.sni, u.spiffe_id),
    }


@lru_cache(maxsize=CACHED)
def upstream_endpoints(u: Upstream) -> Doc:
    lb = [
        {"endpoint": {"address": socket_address(e.address, e.port)}, "health_status": "HEALTHY"}
        for e in sorted(u.endpoints, key=lambda e: (e.address, e.port))
    ]
    return {"cluster_name": u.sni, "endpoints": [{"lb_endpoints": lb}] if lb else []}


def build_clusters(inp: ProxyInputs) -> list[Doc]:
    out = [local_app_cluster(inp)]
    for port in sorted({e.local_port for e in inp.expose}):
        out.append(_static(exposed_cluster(port), inp.local_app_address or "127.0.0.1", port))
    seen = set()
    for u in inp.upstreams:
        if u.sni not in seen:
            seen.add(u.sni)
            out.append(upstream_cluster(u))
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
    seen: dict[str, Doc] = {}
    for u in inp.upstreams:
        seen.setdefault(u.sni, upstream_endpoints(u))
    return list(seen.values())
