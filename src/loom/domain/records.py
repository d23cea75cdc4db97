"""Typed records of the control plane's state, in place of Consul-shaped dicts.

The core works on these; only two edges see another shape: the HTTP layer (``server.views``
and the request decoders of ``loom.domain``) speaks Consul's JSON, and the store layer
(``loom.store.tables``) encodes them to the documents kept on disk, byte for byte what was
stored before these types existed. A mistyped field is then a ``mypy --strict`` error, not a
``KeyError`` at run time.

Config entries have their own records in ``loom.domain.entries`` (intentions live in
``service-intentions`` entries and are flattened into ``Intention`` values by
``loom.domain.intentions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loom.domain.checks import CheckDefinition

CONNECT_PROXY = "connect-proxy"
MESH_GATEWAY_MODES = ("", "none", "local", "remote")
"""Consul's ``MeshGateway.Mode``: how an upstream in another datacenter is reached: ``none``
(dial its sidecars directly), ``local`` (through this datacenter's mesh gateways),
``remote`` (through the destination datacenter's gateways); empty: the next level decides
(upstream > proxy registration > service-defaults > proxy-defaults, else ``none``)."""
MESH_GATEWAY = "mesh-gateway"


@dataclass(frozen=True)
class Check:
    """A health check of an instance (``service_id``) or of its whole node (empty)."""

    node: str
    check_id: str
    name: str
    status: str
    """passing | warning | critical."""
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    namespace: str = "default"
    type: str = ""
    """``ttl`` for TTL checks, empty for static ones (set through the API)."""
    ttl: str = ""
    """The TTL as given (``30s``); empty: not a TTL check."""
    definition: CheckDefinition | None = None
    """What to run for an HTTP, TCP, gRPC, H2PING, alias or script check; None for TTL and
    static checks."""
    managed: bool = False
    """Registered through the agent API, so Loom runs it (the server or the dataplane: see
    ``loom.domain.checkstate.check_runner``); catalog checks are stored, never run."""


@dataclass(frozen=True)
class Node:
    """A catalog node: where its instances run unless they name their own address."""

    node: str
    address: str
    datacenter: str
    id: str = ""
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VirtualIp:
    """The virtual IP allocated to one service name in one namespace."""

    address: str


@dataclass(frozen=True)
class ExternalVips:
    """The virtual IPs allocated to one external-service host."""

    address: str
    """IPv4, from 240.240.0.0/16."""
    address6: str
    """IPv6, from fd00:f0f0::/96, with the same host number."""


@dataclass(frozen=True)
class CaRoot:
    """The persisted CA root: certificate, key and the trust domain it signs for."""

    cert_pem: str
    key_pem: str
    trust_domain: str


@dataclass(frozen=True)
class Cluster:
    """The cluster's identity, made on first start (names the trust domain)."""

    id: str


@dataclass(frozen=True)
class TaggedAddress:
    address: str
    port: int = 0


@dataclass(frozen=True)
class Upstream:
    """An explicit upstream of a sidecar: a local listener for one destination."""

    destination_name: str
    destination_type: str = "service"
    """service | prepared_query (resolved through the query's execution: ``loom.xds.view``)."""
    destination_namespace: str = ""
    """Empty: the proxy's own namespace."""
    datacenter: str = ""
    local_bind_address: str = "127.0.0.1"
    local_bind_port: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    mesh_gateway: str = ""
    """``MeshGateway.Mode`` of this upstream (one of ``MESH_GATEWAY_MODES``)."""


@dataclass(frozen=True)
class ExposedPath:
    """A plain-HTTP path the sidecar serves on its own port (``Proxy.Expose.Paths``)."""

    listener_port: int
    path: str
    local_path_port: int
    protocol: str = "http"


@dataclass(frozen=True)
class Expose:
    checks: bool = False
    paths: tuple[ExposedPath, ...] = ()


@dataclass(frozen=True)
class TransparentProxySettings:
    outbound_listener_port: int = 0
    """0: the service-defaults' or the default (15001)."""
    dialed_directly: bool = False


@dataclass(frozen=True)
class Proxy:
    """The ``Proxy`` block of a connect-proxy instance."""

    destination_service_name: str
    destination_service_id: str
    local_service_address: str = ""
    local_service_port: int = 0
    mode: str = ""
    """"" | direct | transparent (empty: decided by config entries)."""
    transparent_proxy: TransparentProxySettings = TransparentProxySettings()
    upstreams: tuple[Upstream, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    """Opaque proxy config (``bind_address``, ``protocol``...)."""
    expose: Expose | None = Expose()
    """None only for instances stored before ``Expose`` was kept."""
    mesh_gateway: str = ""
    """``Proxy.MeshGateway.Mode`` of the registration (one of ``MESH_GATEWAY_MODES``)."""


@dataclass(frozen=True)
class Weights:
    passing: int = 1
    warning: int = 1


@dataclass(frozen=True)
class Instance:
    """A registered service instance (an application, or a connect-proxy sidecar)."""

    node: str
    datacenter: str
    id: str
    service: str
    kind: str = ""
    """"" (a plain service), connect-proxy or mesh-gateway."""
    namespace: str = "default"
    address: str = ""
    """Empty: reached at its node's address."""
    port: int = 0
    tags: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, TaggedAddress] = field(default_factory=dict)
    enable_tag_override: bool = False
    weights: Weights = Weights()
    connect_native: bool = False
    proxy: Proxy | None = None
    """Set exactly for connect-proxy instances."""

    @property
    def is_proxy(self) -> bool:
        return self.kind == CONNECT_PROXY

    @property
    def is_mesh_gateway(self) -> bool:
        return self.kind == MESH_GATEWAY
