"""Everything one proxy's Envoy configuration depends on, as immutable values.

A ``ProxyInputs`` value (a sidecar's) or a ``GatewayInputs`` value (a mesh gateway's) is the
translator's only argument. Two equal values translate to the same resources, so the server
skips translation (and pushes) when a store change leaves a proxy's inputs equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loom.domain.entries import HttpMatch
from loom.domain.mesh import Endpoint, ExternalHost

__all__ = [
    "EXPLICIT",
    "TRANSPARENT",
    "AccessRule",
    "Endpoint",
    "ExposeListener",
    "ExternalHost",
    "FailoverCluster",
    "GatewayBind",
    "GatewayInputs",
    "GatewayRemote",
    "GatewayService",
    "Inputs",
    "Permission",
    "Principal",
    "ProxyInputs",
    "Upstream",
]

EXPLICIT = "explicit"
TRANSPARENT = "transparent"


@dataclass(frozen=True)
class Upstream:
    """A destination this proxy can dial."""

    service: str
    namespace: str
    datacenter: str
    spiffe_id: str
    """Identity the destination's certificate must carry (verified on the TLS handshake)."""
    sni: str
    """Cluster name and SNI: ``<svc>.<ns>.<dc>.internal.<trust-domain>`` as Consul names it."""
    endpoints: tuple[Endpoint, ...]
    """Healthy sidecars of the destination (their public listeners)."""
    bind_address: str = ""
    """Explicit upstream: local listener address (``127.0.0.1``)."""
    bind_port: int = 0
    """Explicit upstream: local listener port; 0 for transparent-only upstreams."""
    virtual_ips: tuple[str, ...] = ()
    """Transparent proxy: addresses that identify this upstream (VIPs, ClusterIPs)."""
    ports: tuple[int, ...] = ()
    """Transparent proxy: destination ports the app dials (the service's ports)."""
    instance_ips: tuple[str, ...] = ()
    """Transparent proxy: instance addresses, so dialing a pod IP also goes through the mesh."""
    headless: bool = False
    """No virtual IP: instances are dialed directly (plain TCP proxy, 5 s connect timeout)."""
    connect_timeout_ms: int = 5000
    """The cluster's connect timeout (its ``service-resolver``'s ``ConnectTimeout``)."""
    failover: tuple[FailoverCluster, ...] = ()
    """``service-resolver`` failover targets, in order: non-empty makes ``sni`` an aggregate
    cluster over this upstream's own targets and these (``loom.xds.translate.clusters``)."""


@dataclass(frozen=True)
class FailoverCluster:
    """One failover target of an upstream: its own EDS cluster, TLS name and endpoints."""

    sni: str
    """Its SNI (``<subset>.<svc>.<ns>.<dc>.internal.<td>``), presented on the handshake."""
    spiffe_id: str
    endpoints: tuple[Endpoint, ...]
    connect_timeout_ms: int = 5000


@dataclass(frozen=True)
class Principal:
    """A source matcher of intentions: namespace and name, either may be ``*``."""

    namespace: str
    name: str


@dataclass(frozen=True)
class Permission:
    """One L7 permission of an intention: allow or deny requests its HTTP block matches."""

    allow: bool
    http: HttpMatch
    """The permission's ``HTTP`` block (paths, methods, headers)."""


@dataclass(frozen=True)
class AccessRule:
    """One intention targeting this proxy's service, in precedence order."""

    source: Principal
    allow: bool
    """L4 decision: False only for a deny intention (L7 intentions allow at L4)."""
    permissions: tuple[Permission, ...] = ()
    """Non-empty for an L7 intention: decided per request by the HTTP RBAC filter."""


@dataclass(frozen=True)
class ExposeListener:
    """A plain-HTTP path served on its own port (kubelet probes under transparent proxy)."""

    listener_port: int
    path: str
    local_port: int
    protocol: str = "http"


@dataclass(frozen=True)
class ProxyInputs:
    proxy_id: str
    service: str
    """The destination service this sidecar fronts (its identity)."""
    namespace: str
    datacenter: str
    trust_domain: str
    public_address: str
    public_port: int
    local_app_address: str
    local_app_port: int
    protocol: str
    """tcp | http | http2 | grpc (service-defaults, else proxy-defaults, else tcp)."""
    mtls_mode: str
    """strict | permissive: permissive also accepts plain-text clients on the public port."""
    rules: tuple[AccessRule, ...]
    default_allow: bool
    upstreams: tuple[Upstream, ...] = ()
    transparent: bool = False
    outbound_port: int = 15001
    mesh_destinations_only: bool = False
    externals: tuple[ExternalHost, ...] = field(default=())
    expose: tuple[ExposeListener, ...] = ()


@dataclass(frozen=True)
class GatewayBind:
    """One address a mesh gateway listens on."""

    name: str
    """``default`` (its LAN address) or ``wan``: the listener is ``<name>:<address>:<port>``."""
    address: str
    port: int


@dataclass(frozen=True)
class GatewayService:
    """A service of the gateway's own datacenter: connections whose SNI is ``sni`` go to its
    healthy sidecars' public listeners, TLS untouched (the sidecars do mTLS end to end)."""

    sni: str
    """``<svc>.<ns>.<dc>.internal.<trust-domain>``: the filter chain's server name and the
    cluster's name."""
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class GatewayRemote:
    """Another datacenter: connections whose SNI ends in ``.<dc>.internal.<trust-domain>``
    go to its mesh gateways (their WAN addresses)."""

    datacenter: str
    cluster: str
    """``<dc>.internal.<trust-domain>``, as Consul names the cluster."""
    gateways: tuple[Endpoint, ...]


@dataclass(frozen=True)
class GatewayInputs:
    """Everything a mesh gateway's Envoy configuration depends on."""

    proxy_id: str
    service: str
    """The gateway's service name (what its token must ``service:write``)."""
    namespace: str
    datacenter: str
    trust_domain: str
    binds: tuple[GatewayBind, ...]
    services: tuple[GatewayService, ...] = ()
    """Every meshed service of this datacenter, by SNI."""
    remotes: tuple[GatewayRemote, ...] = ()
    """Every other datacenter with a known mesh gateway, by name."""
    connect_timeout_ms: int = 5000
    """``Proxy.Config.connect_timeout_ms`` of the gateway (Consul's), else 5 s."""


Inputs = ProxyInputs | GatewayInputs
"""What ``loom.xds.view.collect_inputs`` gives for any registered proxy."""
