"""The derived mesh as its consumers see it: the snapshot the control plane builds once per
store index (``loom.control.snapshot.build_snapshot``) and the values shared by xDS inputs and
the DNS name table.

One definition each, so the snapshot the control plane builds, the inputs it hands the xDS
translators and the table a DNS proxy parses all speak of the same things.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loom.domain.entries import MeshConfig, ProxyDefaults, ServiceDefaults, ServiceResolver
from loom.domain.intentions import Intention
from loom.domain.records import Instance

if TYPE_CHECKING:  # loom.domain.federation imports Endpoint from here
    from loom.domain.federation import FederationState

Key = tuple[str, str]
"""(namespace, service)."""


@dataclass(frozen=True)
class Endpoint:
    """A reachable address of a service: for the mesh, a healthy sidecar's public listener."""

    address: str
    port: int


@dataclass(frozen=True)
class ExternalHost:
    """A host outside the mesh registered by an ``external-service`` entry.

    The DNS proxy answers it with its VIPs; a transparent proxy's outbound listener routes
    ``VIP:port`` to it. Wildcard hosts (``*.example.com``) get no VIP."""

    host: str
    service: str
    """The ``external-service`` entry naming it."""
    namespace: str
    virtual_ips: tuple[str, ...]
    """Its IPv4 and IPv6 VIPs (240.240.0.0/16, fd00:f0f0::/96); empty: none allocated."""
    ports: tuple[int, ...] = ()
    """The entry's ports (what the outbound listener matches); the DNS table omits them."""


@dataclass(frozen=True)
class NamedInstance:
    """A healthy instance as DNS names it."""

    address: str
    hostname: str
    """Its pod name (``Meta["pod-name"]``), else its service ID."""


@dataclass
class ServiceEntry:
    """One service (proxies excluded) in one namespace, from all its instances."""

    name: str
    namespace: str
    datacenter: str
    """The datacenter of its first instance (store key order)."""
    dns_vips: list[str] = field(default_factory=list)
    """Per instance its ``virtual`` tagged address (a ClusterIP), else the catalog VIP."""
    vips: list[str] = field(default_factory=list)
    """Every ``virtual`` and ``consul-virtual`` address: what a transparent proxy matches."""
    instance_ips: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    healthy: list[NamedInstance] = field(default_factory=list)


@dataclass(frozen=True)
class QueryTarget:
    """Where a ``prepared_query`` upstream leads: the service its query's execution names
    and the healthy sidecars of the instances that execution kept."""

    service: str
    namespace: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class QueryAnswer:
    """A prepared query executed for DNS (``loom.control.dnsqueries``): what its
    ``<name>.query.consul`` answers."""

    service: str
    """The service the execution looked up (rendered, for a template)."""
    ttl: int
    """The query's ``DNS.TTL`` in seconds; 0: the proxy's default."""
    ordered: bool
    """The order is the answer (``Near``): the proxy must not rotate it."""
    endpoints: tuple[Endpoint, ...]
    """The kept instances' IP addresses and ports, in answer order."""


@dataclass
class MeshSnapshot:
    index: int
    """The store index it was built at (its cache key)."""
    mesh_index: int
    """The highest index at which a table it reads changed (what blocking queries report)."""
    datacenter: str
    trust_domain: str
    roots_pem: str
    default_allow: bool
    services: dict[Key, ServiceEntry] = field(default_factory=dict)
    proxies: dict[str, Instance] = field(default_factory=dict)
    """Proxy ID -> instance (first wins when two nodes reuse an ID)."""
    endpoints: dict[Key, list[Endpoint]] = field(default_factory=dict)
    """Healthy sidecars (of healthy destinations) per service; every service has an entry."""
    meshed: set[Key] = field(default_factory=set)
    """Services with at least one sidecar (healthy or not): transparent-proxy upstreams."""
    intentions: list[Intention] = field(default_factory=list)
    service_defaults: dict[Key, ServiceDefaults] = field(default_factory=dict)
    proxy_defaults: ProxyDefaults = field(default_factory=lambda: ProxyDefaults(name="global"))
    """The ``global`` entry, else an empty one (which decides nothing)."""
    mesh: MeshConfig = field(default_factory=lambda: MeshConfig(name="mesh"))
    """The ``mesh`` entry, else an empty one."""
    externals: list[ExternalHost] = field(default_factory=list)
    """Every host of every external-service entry, in entry then host order."""
    query_targets: dict[str, QueryTarget] = field(default_factory=dict)
    """Query ID or name a sidecar's ``prepared_query`` upstream names -> its execution
    (names that find no query are absent)."""
    query_answers: dict[str, QueryAnswer] = field(default_factory=dict)
    """DNS label (lowercase) of a prepared query's name, or ``#`` + the hash of its ID
    (``loom.domain.queries.dns_id_key``) -> its execution for DNS."""
    resolvers: dict[Key, ServiceResolver] = field(default_factory=dict)
    """``service-resolver`` entries by the service they resolve."""
    subset_endpoints: dict[tuple[str, str, str], tuple[Endpoint, ...]] = field(
        default_factory=dict
    )
    """(namespace, service, subset) -> the healthy sidecars of the instances a resolver's
    subset selects (``loom.domain.resolver.select_subsets``); absent: none."""
    primary_datacenter: str = ""
    """The federation's primary datacenter (``datacenter`` itself when this one is it)."""
    remote: dict[str, FederationState] = field(default_factory=dict)
    """Every other datacenter this server knows, by name (``loom.control.federation``)."""
    remote_vips: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(datacenter, namespace, name) of another datacenter's meshed service -> the local VIP
    this server allocated for it (``loom.control.remotevips``; 240.241.0.0/16)."""
    gateways_lan: tuple[Endpoint, ...] = ()
    """This datacenter's healthy ``mesh-gateway`` instances as local sidecars reach them:
    ``TaggedAddresses["lan"]``, else Address:Port. Gateways are in no other field."""
    gateways_wan: tuple[Endpoint, ...] = ()
    """The same gateways as other datacenters reach them: ``TaggedAddresses["wan"]``, else
    the LAN address."""
    mesh_gateways: dict[str, Instance] = field(default_factory=dict)
    """Proxy ID -> this datacenter's ``mesh-gateway`` instance, healthy or not (first wins,
    as in ``proxies``): what its own Envoy is configured from (``collect_gateway_inputs``)."""
    catalog_index: int = 0
    """The catalog tables' index it was built at: the next snapshot of an unchanged catalog
    (a config entry or intention written) keeps every part derived from the catalog."""
    queries_index: int = 0
    """Likewise for the prepared queries table (``query_targets``, ``query_answers``)."""
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Derivations of this snapshot kept with it (the name table's JSON text)."""

    def defaults_of(self, namespace: str, service: str) -> ServiceDefaults:
        """The service's ``service-defaults``, else an empty entry (which decides nothing;
        one per service and snapshot: every proxy's inputs ask, on every write)."""
        found = self.service_defaults.get((namespace, service))
        if found is not None:
            return found
        empty: dict[tuple[str, str], ServiceDefaults] = self.memo.setdefault("no_defaults", {})
        found = empty.get((namespace, service))
        if found is None:
            found = empty[(namespace, service)] = ServiceDefaults(name=service, namespace=namespace)
        return found
