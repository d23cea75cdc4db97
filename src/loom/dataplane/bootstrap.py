"""Envoy bootstrap for a sidecar (pure): node identity, admin, ADS to the Loom server, and the
agent's SDS socket (``loom_agent_sds``), from which Envoy reads its leaf, key and roots."""

from __future__ import annotations

import ipaddress
from typing import Any

from loom.addrs import Address
from loom.xds.translate.names import AGENT_SDS_CLUSTER

Doc = dict[str, Any]
XDS_CLUSTER = "loom_xds"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def xds_cluster(xds: Address) -> Doc:
    if xds.is_unix:
        address: Doc = {"pipe": {"path": xds.path}}
        kind = "STATIC"
    else:
        address = {"socket_address": {"address": xds.host, "port_value": xds.port}}
        kind = "STATIC" if _is_ip(xds.host) else "STRICT_DNS"
    return {
        "name": XDS_CLUSTER,
        "type": kind,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


def sds_cluster(socket: str) -> Doc:
    """The static cluster to the local agent's SDS server (gRPC over a unix socket)."""
    return {
        "name": AGENT_SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": AGENT_SDS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket}}}}]}
            ],
        },
    }


def build_bootstrap(
    proxy_id: str,
    service: str,
    namespace: str,
    xds: Address,
    admin_address: str = "127.0.0.1",
    admin_port: int = 0,
    delta: bool = True,
    token: str = "",
    *,
    sds_socket: str,
) -> Doc:
    """``token``: the ACL token, sent on the ADS stream as gRPC metadata ``x-consul-token``
    (the file then holds a secret: the dataplane writes it 0600). ``sds_socket``: the
    agent's SDS unix socket, where Envoy reads its leaf, key and roots."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    grpc_service: Doc = {"envoy_grpc": {"cluster_name": XDS_CLUSTER}}
    if token:
        grpc_service["initial_metadata"] = [{"key": "x-consul-token", "value": token}]
    return {
        "node": {
            "id": proxy_id,
            "cluster": service,
            "metadata": {"namespace": namespace, "proxy_id": proxy_id},
        },
        "admin": {
            "address": {"socket_address": {"address": admin_address, "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [grpc_service],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster(xds), sds_cluster(sds_socket)]},
    }
