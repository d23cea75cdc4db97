"""A mesh gateway's Envoy resources: SNI routing that never terminates TLS.

A mesh gateway stands between datacenters. Every connection it accepts is the TLS of one
sidecar talking to another (mTLS end to end); the gateway reads only the server name of the
ClientHello (the TLS inspector) and forwards the bytes untouched:

- ``<svc>.<ns>.<this-dc>.internal.<td>``: to that service's healthy sidecars here;
- ``*.<other-dc>.internal.<td>``: to that datacenter's mesh gateways (their WAN addresses);
- anything else (an unknown name, no TLS, no SNI): closed at once.

Its clusters therefore have no transport socket: the gateway holds no certificate and needs
no leaf, so its agent serves no SDS. Cluster names are Consul's (the SNI of a service,
``<dc>.internal.<td>`` for a datacenter), so a gateway's stats read as Consul's do. Pure.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from loom.xds.inputs import Endpoint, GatewayBind, GatewayInputs
from loom.xds.translate.listeners import TLS_INSPECTOR, socket_address, tcp_proxy
from loom.xds.translate.names import ADS

Doc = dict[str, Any]
_EXT = "type.googleapis.com/envoy.extensions."
UNKNOWN_SNI = "unknown_sni"
"""The default filter chain's name: a server name no chain matches, closed."""
CLOSE = {
    "name": "envoy.filters.network.direct_response",
    "typed_config": {"@type": _EXT + "filters.network.direct_response.v3.Config"},
}
"""A terminal filter that answers nothing and closes the connection."""


def gateway_listener_name(bind: GatewayBind) -> str:
    return f"{bind.name}:{bind.address}:{bind.port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _timeout(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}s"


def _lb_endpoints(endpoints: tuple[Endpoint, ...]) -> list[Doc]:
    return [
        {"endpoint": {"address": socket_address(e.address, e.port)}, "health_status": "HEALTHY"}
        for e in sorted(set(endpoints), key=lambda e: (e.address, e.port))
    ]


def _assignment(name: str, endpoints: tuple[Endpoint, ...]) -> Doc:
    lb = _lb_endpoints(endpoints)
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}] if lb else []}


def _cluster(name: str, endpoints: tuple[Endpoint, ...], timeout_ms: int) -> Doc:
    """EDS for addresses; a DNS cluster when a gateway is known by host name (a cloud load
    balancer's WAN name), which EDS cannot carry. No transport socket: TLS passes through."""
    if all(_is_ip(e.address) for e in endpoints):
        return {
            "name": name,
            "type": "EDS",
            "eds_cluster_config": {"eds_config": ADS},
            "connect_timeout": _timeout(timeout_ms),
        }
    return {
        "name": name,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _timeout(timeout_ms),
        "load_assignment": _assignment(name, endpoints),
    }


def gateway_listener(inp: GatewayInputs, bind: GatewayBind) -> Doc:
    """One listener: a filter chain per local service (its exact SNI) and per other
    datacenter (``*.<dc>.internal.<td>``); the default chain closes the rest."""
    chains: list[Doc] = [
        {
            "filter_chain_match": {"server_names": [s.sni]},
            "filters": [tcp_proxy(f"mesh_gateway_local.{s.sni}", s.sni)],
        }
        for s in sorted(inp.services, key=lambda s: s.sni)
    ]
    chains += [
        {
            "filter_chain_match": {"server_names": [f"*.{r.cluster}"]},
            "filters": [tcp_proxy(f"mesh_gateway_remote.{r.datacenter}", r.cluster)],
        }
        for r in sorted(inp.remotes, key=lambda r: r.cluster)
    ]
    return {
        "name": gateway_listener_name(bind),
        "address": socket_address(bind.address, bind.port),
        "listener_filters": [TLS_INSPECTOR],
        "filter_chains": chains,
        "default_filter_chain": {"name": UNKNOWN_SNI, "filters": [CLOSE]},
    }


def build_gateway(inp: GatewayInputs) -> tuple[list[Doc], list[Doc], list[Doc]]:
    """The gateway's listeners, clusters and endpoints (EDS clusters only)."""
    listeners = [gateway_listener(inp, b) for b in inp.binds]
    targets = [(s.sni, s.endpoints) for s in inp.services]
    targets += [(r.cluster, r.gateways) for r in inp.remotes]
    clusters: list[Doc] = []
    endpoints: list[Doc] = []
    for name, eps in sorted(targets, key=lambda t: t[0]):
        cluster = _cluster(name, eps, inp.connect_timeout_ms)
        clusters.append(cluster)
        if cluster["type"] == "EDS":
            endpoints.append(_assignment(name, eps))
    return listeners, clusters, endpoints
