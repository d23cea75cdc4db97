"""Listeners: the inbound public listener, explicit upstream listeners, the outbound
(transparent proxy) listener.

The public and explicit upstream listeners are memoised on exactly what they are built from
(``CACHED`` entries each): proxies alike in those get the very same document, which the
converter then recognises without serialising it again. Documents returned here may be
shared: never change them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from loom.xds.inputs import AccessRule, ExposeListener, ProxyInputs, Upstream
from loom.xds.translate.names import (
    LOCAL_APP,
    OUTBOUND_LISTENER,
    PASSTHROUGH,
    PUBLIC_LISTENER,
    exposed_cluster,
    external_cluster,
    upstream_listener,
)
from loom.xds.translate.rbac import http_rbac_filter, network_rbac_filter
from loom.xds.translate.tls import downstream_tls

Doc = dict[str, Any]
_EXT = "type.googleapis.com/envoy.extensions."
TLS_INSPECTOR = {
    "name": "envoy.filters.listener.tls_inspector",
    "typed_config": {"@type": _EXT + "filters.listener.tls_inspector.v3.TlsInspector"},
}
ORIGINAL_DST = {
    "name": "envoy.filters.listener.original_dst",
    "typed_config": {"@type": _EXT + "filters.listener.original_dst.v3.OriginalDst"},
}


def socket_address(address: str, port: int) -> Doc:
    return {"socket_address": {"address": address, "port_value": port}}


def tcp_proxy(stat_prefix: str, cluster: str) -> Doc:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": _EXT + "filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": stat_prefix,
            "cluster": cluster,
        },
    }


HTTP_PROTOCOLS = ("http", "http2", "grpc")


def http_connection_manager(stat_prefix: str, routes: list[Doc], filters: list[Doc]) -> Doc:
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": _EXT + "filters.http.router.v3.Router"},
    }
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _EXT + "filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [
                    {
                        "name": stat_prefix,
                        "domains": ["*"],
                        "routes": routes,
                    }
                ],
            },
            "http_filters": [*filters, router],
        },
    }


CACHED = 16_384
"""Distinct documents kept per memoised builder: with 5,000 proxies each with its own port,
alternating writes (deny, allow) need two per proxy; an LRU smaller than what one write
walks hits nothing."""


def public_listener(inp: ProxyInputs) -> Doc:
    return _public_listener(
        inp.protocol, inp.trust_domain, inp.rules, inp.default_allow, inp.mtls_mode,
        inp.public_address, inp.public_port,
    )  # fmt: skip


@lru_cache(maxsize=CACHED)
def _public_listener(
    protocol: str,
    trust_domain: str,
    rules: tuple[AccessRule, ...],
    default_allow: bool,
    mtls_mode: str,
    public_address: str,
    public_port: int,
) -> Doc:
    """mTLS with a client certificate from the mesh CA, RBAC from intentions, then the app.

    HTTP services get an HTTP connection manager whose RBAC filter also enforces L7
    permissions (a denied request is a 403); TCP services get network RBAC (a denied
    connection is closed: curl exits 52).
    """
    if protocol in HTTP_PROTOCOLS:
        filters = [
            http_connection_manager(
                "public_listener",
                [{"match": {"prefix": "/"}, "route": {"cluster": LOCAL_APP}}],
                [http_rbac_filter(trust_domain, rules, default_allow)],
            )
        ]
    else:
        filters = [
            network_rbac_filter(trust_domain, rules, default_allow, "public_listener_rbac"),
            tcp_proxy("public_listener", LOCAL_APP),
        ]
    chains = [
        {
            "filter_chain_match": {"transport_protocol": "tls"},
            "transport_socket": downstream_tls(),
            "filters": filters,
        }
    ]
    if mtls_mode == "permissive":
        # Onboarding: plain-text clients (not yet in the mesh) reach the app; no identity,
        # so no intentions can apply to them.
        chains.append(
            {
                "filter_chain_match": {"transport_protocol": "raw_buffer"},
                "filters": [tcp_proxy("public_listener_plaintext", LOCAL_APP)],
            }
        )
    return {
        "name": f"{PUBLIC_LISTENER}:{public_address}:{public_port}",
        "address": socket_address(public_address, public_port),
        "traffic_direction": "INBOUND",
        "listener_filters": [TLS_INSPECTOR],
        "filter_chains": chains,
    }


@lru_cache(maxsize=CACHED)
def explicit_upstream_listener(u: Upstream) -> Doc:
    return {
        "name": upstream_listener(u.service, u.namespace, u.bind_port),
        "address": socket_address(u.bind_address or "127.0.0.1", u.bind_port),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [tcp_proxy(f"upstream.{u.sni}", u.sni)]}],
    }


def _prefixes(ips: list[str]) -> list[Doc]:
    return [{"address_prefix": ip, "prefix_len": 128 if ":" in ip else 32} for ip in ips]


def outbound_listener(inp: ProxyInputs) -> Doc:
    """Transparent proxy: iptables sends every outbound connection here; the original
    destination picks the filter chain (service VIP, instance IP:port, external VIP:port).

    Envoy narrows filter chains by destination port before it looks at addresses: once any
    chain names port P, portless chains are out of the running for P. So a VIP chain is
    emitted without a port and again for every port some other chain names.
    """
    specific: list[tuple[str, str, list[str], int, Doc]] = []  # (kind, key, ips, port, filter)
    for u in inp.upstreams:
        for port in sorted(set(u.ports)):
            specific.append(
                ("direct", u.sni, list(u.instance_ips), port, tcp_proxy(f"upstream.{u.sni}", u.sni))
            )
    for ext in inp.externals:
        for port in sorted(set(ext.ports)):
            specific.append(
                (
                    "external",
                    ext.host,
                    list(ext.virtual_ips),
                    port,
                    tcp_proxy(f"external.{ext.host}", external_cluster(ext.host, port)),
                )
            )
    ports = sorted({spec[3] for spec in specific})
    chains: list[Doc] = []
    taken: set[tuple[str, int]] = set()

    def claim(ips: list[str], port: int) -> list[str]:
        free = [ip for ip in ips if (ip, port) not in taken]
        taken.update((ip, port) for ip in free)
        return sorted(free)

    def add(name: str, ips: list[str], port: int, filt: Doc) -> None:
        got = claim(ips, port)
        if got:
            match: Doc = {"prefix_ranges": _prefixes(got)}
            if port:
                match["destination_port"] = port
            chains.append({"name": name, "filter_chain_match": match, "filters": [filt]})

    # Externals first: their VIPs are theirs alone.
    for kind, key, ips, port, filt in specific:
        if kind == "external":
            add(f"external:{key}:{port}", ips, port, filt)
    for u in inp.upstreams:
        filt = tcp_proxy(f"upstream.{u.sni}", u.sni)
        for port in (0, *ports):
            add(f"vip:{u.sni}" + (f":{port}" if port else ""), list(u.virtual_ips), port, filt)
    for kind, key, ips, port, filt in specific:
        if kind == "direct":
            add(f"direct:{key}:{port}", ips, port, filt)
    listener: Doc = {
        "name": f"{OUTBOUND_LISTENER}:127.0.0.1:{inp.outbound_port}",
        "address": socket_address("127.0.0.1", inp.outbound_port),
        "traffic_direction": "OUTBOUND",
        "listener_filters": [ORIGINAL_DST],
        "filter_chains": chains,
    }
    if not inp.mesh_destinations_only:
        listener["default_filter_chain"] = {
            "name": "passthrough",
            "filters": [tcp_proxy("passthrough", PASSTHROUGH)],
        }
    return listener


def expose_listeners(inp: ProxyInputs) -> list[Doc]:
    """One plain-HTTP listener per expose port; each routes its exact paths to the app."""
    by_port: dict[int, list[ExposeListener]] = {}
    for e in inp.expose:
        by_port.setdefault(e.listener_port, []).append(e)
    out = []
    for port, paths in sorted(by_port.items()):
        routes = [
            {"match": {"path": e.path}, "route": {"cluster": exposed_cluster(e.local_port)}}
            for e in sorted(paths, key=lambda e: e.path)
        ]
        out.append(
            {
                "name": f"exposed_path_listener:{inp.public_address}:{port}",
                "address": socket_address(inp.public_address, port),
                "traffic_direction": "INBOUND",
                "filter_chains": [
                    {"filters": [http_connection_manager(f"exposed_path_{port}", routes, [])]}
                ],
            }
        )
    return out


def build_listeners(inp: ProxyInputs) -> list[Doc]:
    out = [public_listener(inp), *expose_listeners(inp)]
    out += [explicit_upstream_listener(u) for u in inp.upstreams if u.bind_port]
    if inp.transparent:
        out.append(outbound_listener(inp))
    return out
