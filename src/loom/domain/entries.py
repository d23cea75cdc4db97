"""Typed config entries: one frozen record per kind, in place of Consul-shaped dicts.

``loom.domain.config_entries`` decodes Consul's JSON into these (strictly, naming the bad
field); the HTTP layer (``server.views``) encodes them back to Consul's shape and the store
layer (``loom.store.entry_codec``, named by ``loom.store.tables``) to the documents on disk,
byte for byte what was stored before these types existed. The core and the mesh snapshot
read typed fields, so a mistyped one is a ``mypy --strict`` error.

Optional parts of an intention's ``HTTP`` block are ``None`` when absent: Consul's JSON keeps
them only when given, and a given empty value (``"PathExact": ""``) matches differently from
an absent one, so absence is kept apart from emptiness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from loom.domain.records import TransparentProxySettings

SERVICE_DEFAULTS = "service-defaults"
PROXY_DEFAULTS = "proxy-defaults"
SERVICE_INTENTIONS = "service-intentions"
MESH = "mesh"
EXTERNAL_SERVICE = "external-service"
SERVICE_RESOLVER = "service-resolver"
KINDS = (
    SERVICE_DEFAULTS, PROXY_DEFAULTS, SERVICE_INTENTIONS, MESH, EXTERNAL_SERVICE, SERVICE_RESOLVER,
)  # fmt: skip


def entry_key(kind: str, namespace: str, name: str) -> str:
    """The store key of an entry."""
    return f"{kind}/{namespace}/{name}"


@dataclass(frozen=True)
class HeaderMatch:
    """One ``HTTP.Header`` condition of an intention permission."""

    name: str
    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None
    present: bool | None = None
    """Given (even ``false``): the condition is the header's presence."""
    invert: bool | None = None


@dataclass(frozen=True)
class HttpMatch:
    """The ``HTTP`` block of a permission: every part given must match the request."""

    path_exact: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None
    methods: tuple[str, ...] = ()
    """Upper case; empty: any method."""
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class IntentionPermission:
    """One L7 permission: ``allow`` or ``deny`` the requests its HTTP block matches."""

    action: str
    http: HttpMatch = HttpMatch()


@dataclass(frozen=True)
class IntentionSource:
    """One source of a ``service-intentions`` entry."""

    name: str
    """A service name or ``*``."""
    namespace: str = "default"
    """A namespace or ``*``."""
    action: str = ""
    """allow | deny; empty exactly when ``permissions`` decide (an L7 intention)."""
    description: str = ""
    type: str = "consul"
    permissions: tuple[IntentionPermission, ...] = ()
    legacy_id: str = ""
    """The UUID of an intention created by the legacy ``POST /v1/connect/intentions`` (its
    handle for the by-ID endpoints); empty for one written any other way, as in Consul."""


@dataclass(frozen=True)
class ExternalPort:
    """A port of an ``external-service`` entry's hosts."""

    number: int
    protocol: str = "tcp"
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class EntryBase:
    """What every kind has: its name, namespace, metadata and the indexes of its writes."""

    kind: ClassVar[str]
    name: str
    namespace: str = "default"
    meta: dict[str, str] = field(default_factory=dict)
    create_index: int = 0
    """The store index of its first write (0 before it is written)."""
    modify_index: int = 0
    """The store index of its last write (what ``?cas=`` compares)."""

    @property
    def key(self) -> str:
        return entry_key(self.kind, self.namespace, self.name)


@dataclass(frozen=True, kw_only=True)
class ServiceDefaults(EntryBase):
    """``service-defaults``: per-service protocol, mTLS mode and proxy mode."""

    kind: ClassVar[str] = SERVICE_DEFAULTS
    protocol: str = ""
    """"" | tcp | http | http2 | grpc (empty: the proxy-defaults' or tcp)."""
    mutual_tls_mode: str = ""
    """"" | strict | permissive."""
    mode: str = ""
    """"" | direct | transparent."""
    transparent_proxy: TransparentProxySettings = field(default_factory=TransparentProxySettings)
    mesh_gateway: str = ""
    """``MeshGateway.Mode`` for this service's upstreams in other datacenters ("" | none |
    local | remote; empty: the proxy-defaults' decide)."""


@dataclass(frozen=True, kw_only=True)
class ProxyDefaults(EntryBase):
    """``proxy-defaults`` (always named ``global`` in namespace ``default``)."""

    kind: ClassVar[str] = PROXY_DEFAULTS
    config: dict[str, Any] = field(default_factory=dict)
    """Opaque proxy config; ``protocol`` is the mesh-wide default protocol."""
    mode: str = ""
    mutual_tls_mode: str = ""
    transparent_proxy: TransparentProxySettings = field(default_factory=TransparentProxySettings)
    mesh_gateway: str = ""
    """``MeshGateway.Mode``, the mesh-wide default ("" | none | local | remote)."""


@dataclass(frozen=True, kw_only=True)
class MeshConfig(EntryBase):
    """``mesh`` (always named ``mesh`` in namespace ``default``)."""

    kind: ClassVar[str] = MESH
    mesh_destinations_only: bool = False
    """``TransparentProxy.MeshDestinationsOnly``: no passthrough to addresses outside."""
    allow_enabling_permissive_mutual_tls: bool = True


@dataclass(frozen=True, kw_only=True)
class ServiceIntentions(EntryBase):
    """``service-intentions``: who may reach the destination ``namespace/name``."""

    kind: ClassVar[str] = SERVICE_INTENTIONS
    sources: tuple[IntentionSource, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ExternalService(EntryBase):
    """Loom's ``external-service``: hosts outside the mesh that get virtual IPs."""

    kind: ClassVar[str] = EXTERNAL_SERVICE
    hosts: tuple[str, ...] = ()
    """Lower case; ``*.`` prefixes are wildcards (no virtual IP)."""
    ports: tuple[ExternalPort, ...] = ()


@dataclass(frozen=True)
class ResolverSubset:
    """One named subset of a ``service-resolver``: the instances its filter selects."""

    filter: str = ""
    """A bexpr expression on the instance (``Service.Meta.version == v2``); empty: all."""
    only_passing: bool = False
    """True: instances whose checks are all passing (warning ones are left out too)."""


@dataclass(frozen=True)
class ResolverRedirect:
    """``Redirect``: callers of this service are sent to another target instead."""

    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    datacenter: str = ""


@dataclass(frozen=True)
class FailoverTarget:
    """One of ``Failover.Targets``: where to go, fields left empty keep the primary's."""

    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    datacenter: str = ""


@dataclass(frozen=True)
class ResolverFailover:
    """``Failover[subset]``: targets tried in order when every primary endpoint is down."""

    service: str = ""
    service_subset: str = ""
    namespace: str = ""
    datacenters: tuple[str, ...] = ()
    targets: tuple[FailoverTarget, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ServiceResolver(EntryBase):
    """``service-resolver``: which instances of a service its callers reach (subsets,
    redirect, failover; validated and resolved by ``loom.domain.resolver``)."""

    kind: ClassVar[str] = SERVICE_RESOLVER
    default_subset: str = ""
    subsets: dict[str, ResolverSubset] = field(default_factory=dict)
    redirect: ResolverRedirect | None = None
    failover: dict[str, ResolverFailover] = field(default_factory=dict)
    """Subset name (or ``*``, any subset) -> its failover."""
    connect_timeout: str = ""
    """A Go duration as given (``5s``); empty: Envoy clusters keep the 5 s default."""
    request_timeout: str = ""
    """A Go duration as given; kept and shown (L7 routes are not built for it yet)."""


ConfigEntry = (
    ServiceDefaults | ProxyDefaults | MeshConfig | ServiceIntentions | ExternalService
    | ServiceResolver
)  # fmt: skip
