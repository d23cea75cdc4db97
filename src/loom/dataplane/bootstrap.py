"""Envoy bootstrap for a sidecar (pure): node identity, admin, and ADS to the Loom server.

ADS goes over TLS when the server's xDS address is ``https://`` (its ``--grpc-tls-addr``):
the ``loom_xds`` cluster then verifies the server's certificate against the CA file and its
name (SNI and a SAN match), and presents a client certificate when one is given.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from loom.addrs import Address

Doc = dict[str, Any]
XDS_CLUSTER = "loom_xds"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True)
class XdsTls:
    """How Envoy verifies the server's TLS xDS listener (paths Envoy reads itself)."""

    ca_file: str
    """PEM CAs the server's certificate must chain to (the built-in CA's ``ca.pem``)."""
    server_name: str
    """SNI sent, and the DNS name or IP address the certificate must carry."""
    cert_file: str | None = None
    """PEM client certificate, for a server with ``--tls-verify-incoming``."""
    key_file: str | None = None
    """PEM key of ``cert_file``."""


def _tls_socket(tls: XdsTls) -> Doc:
    san_type = "IP_ADDRESS" if _is_ip(tls.server_name) else "DNS"
    common: Doc = {
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"filename": tls.ca_file},
            "match_typed_subject_alt_names": [
                {"san_type": san_type, "matcher": {"exact": tls.server_name}}
            ],
        },
    }
    if tls.cert_file:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": tls.cert_file},
                "private_key": {"filename": tls.key_file or tls.cert_file},
            }
        ]
    context: Doc = {"@type": UPSTREAM_TLS, "common_tls_context": common}
    if not _is_ip(tls.server_name):
        context["sni"] = tls.server_name
    return {"name": TLS_SOCKET, "typed_config": context}


def xds_cluster(xds: Address, tls: XdsTls | None = None) -> Doc:
    if xds.is_unix:
        address: Doc = {"pipe": {"path": xds.path}}
        kind = "STATIC"
    else:
        address = {"socket_address": {"address": xds.host, "port_value": xds.port}}
        kind = "STATIC" if _is_ip(xds.host) else "STRICT_DNS"
    cluster: Doc = {
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
    if tls is not None:
        cluster["transport_socket"] = _tls_socket(tls)
    return cluster


def build_bootstrap(
    proxy_id: str,
    service: str,
    namespace: str,
    xds: Address,
    admin_address: str = "127.0.0.1",
    admin_port: int = 0,
    delta: bool = True,
    xds_tls: XdsTls | None = None,
) -> Doc:
    ads = {"ads": {}, "resource_api_version": "V3"}
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
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [xds_cluster(xds, xds_tls)]},
    }
