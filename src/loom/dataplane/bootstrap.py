"""Envoy bootstrap for a sidecar (pure): node identity, admin, ADS to the Loom server, and the
agent's SDS socket (``loom_agent_sds``), from which Envoy reads its leaf, key and roots.

ADS goes over TLS when the server's xDS address is ``https://`` (its ``--grpc-tls-addr``):
the ``loom_xds`` cluster then verifies the server's certificate against the CA file and its
name (SNI and a SAN match), and presents a client certificate when one is given.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
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


TLS_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True)
class XdsTls:
    """How Envoy verifies the server's TLS xDS listener (paths Envoy reads itself)."""

    ca_file: str
    """PEM CAs the server's certificate must chain to (the built-in CA's ``ca.pem``); empty
    when ``ca_pem`` gives them."""
    server_name: str
    """SNI sent, and the DNS name or IP address the certificate must carry."""
    cert_file: str | None = None
    """PEM client certificate, for a server with ``--tls-verify-incoming``."""
    key_file: str | None = None
    """PEM key of ``cert_file``."""
    ca_pem: str | None = None
    """The CAs as PEM text, inlined in the bootstrap (``CONSUL_CACERT_PEM``: no file in the
    pod); used instead of ``ca_file``."""


def _tls_socket(tls: XdsTls) -> Doc:
    san_type = "IP_ADDRESS" if _is_ip(tls.server_name) else "DNS"
    common: Doc = {
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": (
                {"inline_string": tls.ca_pem} if tls.ca_pem else {"filename": tls.ca_file}
            ),
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


def _grpc_cluster(name: str, kind: str, address: Doc) -> Doc:
    """A static or DNS cluster of one HTTP/2 (gRPC) endpoint."""
    return {
        "name": name,
        "type": kind,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


def xds_cluster(xds: Address, tls: XdsTls | None = None) -> Doc:
    """The cluster to the server's xDS port (over TLS when ``tls`` is given)."""
    if xds.is_unix:
        cluster = _grpc_cluster(XDS_CLUSTER, "STATIC", {"pipe": {"path": xds.path}})
    else:
        address = {"socket_address": {"address": xds.host, "port_value": xds.port}}
        kind = "STATIC" if _is_ip(xds.host) else "STRICT_DNS"
        cluster = _grpc_cluster(XDS_CLUSTER, kind, address)
    if tls is not None:
        cluster["transport_socket"] = _tls_socket(tls)
    return cluster


def sds_cluster(socket: str) -> Doc:
    """The static cluster to the local agent's SDS server (gRPC over a unix socket)."""
    return _grpc_cluster(AGENT_SDS_CLUSTER, "STATIC", {"pipe": {"path": socket}})


_SNI_TAIL = r"[^.]+\.internal\.[^.]+\.consul\."
"""What follows ``<service>.<namespace>.`` in a mesh cluster's SNI name."""
STATS_CONFIG: Doc = {
    # Mesh clusters are named by their dotted SNI (<svc>.<ns>.<dc>.internal.<td>.consul) and
    # the TCP proxies' stat prefixes contain one. Envoy's default extractors (which run
    # first, on the original name) take the part up to the first dot (the service) as the
    # tag; these take the rest out of the metric's name as tags too, so a stat is one
    # Prometheus family for every cluster (envoy_cluster_upstream_cx_total{
    # envoy_cluster_name="api",consul_destination_namespace="default",...}) instead of one
    # family per cluster with the trust domain in its name.
    "stats_tags": [
        {
            "tag_name": "consul.destination.namespace",
            "regex": r"^cluster\.[^.]+\.(([^.]+)\.)" + _SNI_TAIL,
        },
        {
            "tag_name": "consul.destination.datacenter",
            "regex": r"^cluster\.[^.]+\.[^.]+\.(([^.]+)\.internal\.[^.]+\.consul\.)",
        },
        {
            "tag_name": "consul.upstream.service",
            "regex": r"^tcp\.upstream\.(([^.]+)\.[^.]+\." + _SNI_TAIL + ")",
        },
    ],
}
"""Envoy's stats tags for mesh cluster names (see the comment above)."""


def build_bootstrap(
    proxy_id: str,
    service: str,
    namespace: str,
    xds: Address,
    admin_address: str = "127.0.0.1",
    admin_port: int = 0,
    delta: bool = True,
    token: str = "",
    xds_tls: XdsTls | None = None,
    *,
    sds_socket: str | None,
) -> Doc:
    """``token``: the ACL token, sent on the ADS stream as gRPC metadata ``x-consul-token``
    (the file then holds a secret: the dataplane writes it 0600). ``sds_socket``: the
    agent's SDS unix socket, where Envoy reads its leaf, key and roots; None for a mesh
    gateway, which has none (it never terminates TLS)."""
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
        "static_resources": {
            "clusters": [xds_cluster(xds, xds_tls)]
            + ([sds_cluster(sds_socket)] if sds_socket is not None else [])
        },
        "stats_config": STATS_CONFIG,
    }
