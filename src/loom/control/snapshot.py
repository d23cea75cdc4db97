"""The mesh as its consumers see it: one snapshot per store index, shared by xDS and DNS.

``build_snapshot`` walks instances, health, VIPs, intentions, config entries and external
hosts once; ``State.snapshot()`` caches the result by store index, so every xDS session and
every DNS proxy watching the name table share one walk per write. Consumers derive from it
without touching the store: ``loom.xds.view.collect_inputs`` (one proxy's inputs) and
``loom.control.nametable.build_name_table`` (the DNS table). A snapshot is never changed
after it is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loom.control.catalog import Catalog
from loom.control.certs import Certs
from loom.control.configs import Configs
from loom.domain.entries import MeshConfig, ProxyDefaults, ServiceDefaults
from loom.domain.intentions import Intention
from loom.domain.mesh import Endpoint, ExternalHost
from loom.domain.records import Instance
from loom.store.tables import CATALOG_TABLES, CONFIG_TABLES

Key = tuple[str, str]  # (namespace, service)

MESH_TABLES = CATALOG_TABLES + CONFIG_TABLES
"""The tables a snapshot reads (besides the CA, which does not change once started)."""


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
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Derivations of this snapshot kept with it (the name table's JSON text)."""

    def defaults_of(self, namespace: str, service: str) -> ServiceDefaults:
        """The service's ``service-defaults``, else an empty entry (which decides nothing)."""
        found = self.service_defaults.get((namespace, service))
        return found if found is not None else ServiceDefaults(name=service, namespace=namespace)


def build_snapshot(
    index: int, mesh_index: int, catalog: Catalog, configs: Configs, certs: Certs
) -> MeshSnapshot:
    snap = MeshSnapshot(
        index=index,
        mesh_index=mesh_index,
        datacenter=catalog.settings.datacenter,
        trust_domain=certs.trust_domain,
        roots_pem=certs.root.cert_pem,
        default_allow=configs.default_allow,
    )
    healthy = catalog.is_healthy
    instances = catalog.instances()
    by_id = {(d.node, d.namespace, d.id): d for d in instances}
    for inst in instances:
        address = inst.address or catalog.node_of(inst).address
        if inst.proxy is not None:
            snap.proxies.setdefault(inst.id, inst)
            proxy = inst.proxy
            dest = by_id.get((inst.node, inst.namespace, proxy.destination_service_id))
            dkey = (inst.namespace, proxy.destination_service_name)
            snap.meshed.add(dkey)
            if healthy(inst) and dest is not None and healthy(dest):
                snap.endpoints.setdefault(dkey, []).append(Endpoint(address, inst.port))
            continue
        key = (inst.namespace, inst.service)
        snap.endpoints.setdefault(key, [])
        svc = snap.services.get(key)
        if svc is None:
            svc = snap.services[key] = ServiceEntry(key[1], key[0], inst.datacenter)
        if address and address not in svc.instance_ips:
            svc.instance_ips.append(address)
        if inst.port and inst.port not in svc.ports:
            svc.ports.append(inst.port)
        tagged = catalog.tagged_addresses(inst)
        for tag in ("virtual", "consul-virtual"):
            vip = tagged[tag].address if tag in tagged else None
            if vip and vip not in svc.vips:
                svc.vips.append(vip)
        given = inst.tagged_addresses.get("virtual")
        dns_vip = (given.address if given else None) or catalog.vip_of(*key)
        if dns_vip and dns_vip not in svc.dns_vips:
            svc.dns_vips.append(dns_vip)
        if healthy(inst):
            hostname = inst.meta.get("pod-name") or inst.id
            svc.healthy.append(NamedInstance(address, hostname))
    snap.intentions = configs.intentions()
    for e in configs.entries():
        if isinstance(e, ServiceDefaults):
            snap.service_defaults[(e.namespace, e.name)] = e
        elif isinstance(e, ProxyDefaults):
            snap.proxy_defaults = e
        elif isinstance(e, MeshConfig):
            snap.mesh = e
    ext_vips = configs.external_vips()
    for x in configs.external_services():
        ports = tuple(p.number for p in x.ports)
        for host in x.hosts:
            alloc = ext_vips.get(host)
            vips = (alloc.address, alloc.address6) if alloc else ()
            snap.externals.append(ExternalHost(host, x.name, x.namespace, vips, ports))
    return snap
