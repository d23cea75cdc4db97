"""The mesh as its consumers see it: one snapshot per store index, shared by xDS and DNS.

``build_snapshot`` walks instances, health, VIPs, intentions, config entries and external
hosts once; ``State.snapshot()`` caches the result by store index, so every xDS session and
every DNS proxy watching the name table share one walk per write; a write that leaves the
catalog tables alone (a config entry, an intention) does not even walk the instances: the
new snapshot keeps the previous one's catalog parts. Consumers derive from it
without touching the store: ``loom.xds.view.collect_inputs`` (one proxy's inputs) and
``loom.control.nametable.build_name_table`` (the DNS table). A snapshot is never changed
after it is built; its types live in ``loom.domain.mesh`` (pure), so consumers that only read
a snapshot never import the store or the catalog.
"""

from __future__ import annotations

from dataclasses import replace

from loom.control.catalog import Catalog
from loom.control.certs import Certs
from loom.control.configs import Configs
from loom.control.dnsqueries import query_answers
from loom.control.errors import NotFound
from loom.control.federation import Federation
from loom.control.queries import Queries
from loom.control.remotevips import RemoteVips
from loom.control.selfreg import is_server_service
from loom.domain.entries import MeshConfig, ProxyDefaults, ServiceDefaults, ServiceResolver
from loom.domain.fields import ValidationError
from loom.domain.mesh import (
    Endpoint,
    ExternalHost,
    MeshSnapshot,
    NamedInstance,
    QueryTarget,
    ServiceEntry,
)
from loom.domain.records import Instance
from loom.domain.resolver import Candidate, instance_doc, select_subsets
from loom.store.tables import (
    CATALOG_TABLES,
    CONFIG_TABLES,
    FEDERATION_TABLES,
    QUERIES,
    REMOTE_VIP_TABLES,
)

MESH_TABLES = (
    CATALOG_TABLES + CONFIG_TABLES + (QUERIES.name,) + FEDERATION_TABLES + REMOTE_VIP_TABLES
)
"""The tables a snapshot reads (besides the CA, whose roots change only by rotation: a write,
so a new store index and a new snapshot)."""


def build_snapshot(
    index: int,
    mesh_index: int,
    catalog: Catalog,
    configs: Configs,
    certs: Certs,
    queries: Queries | None = None,
    federation: Federation | None = None,
    remote_vips: RemoteVips | None = None,
    previous: MeshSnapshot | None = None,
    catalog_index: int = 0,
    queries_index: int = 0,
) -> MeshSnapshot:
    """The mesh now; ``previous``, when given, is the snapshot before it, whose catalog parts
    are kept (the same objects) when the catalog tables are still at ``catalog_index`` and
    the resolvers are equal (subsets select from the catalog by them), and its query parts
    when the queries table is still at ``queries_index`` too."""
    datacenter = catalog.settings.datacenter
    snap = MeshSnapshot(
        index=index,
        mesh_index=mesh_index,
        datacenter=datacenter,
        trust_domain=certs.trust_domain,
        roots_pem=certs.roots_pem,
        default_allow=configs.default_allow,
        primary_datacenter=federation.primary if federation is not None else datacenter,
        remote=federation.states() if federation is not None else {},
        remote_vips=remote_vips.addresses() if remote_vips is not None else {},
        catalog_index=catalog_index,
        queries_index=queries_index,
    )
    snap.resolvers = {
        (e.namespace, e.name): e for e in configs.entries() if isinstance(e, ServiceResolver)
    }
    _configs_part(snap, configs)
    if (
        previous is not None
        and catalog_index
        and previous.catalog_index == catalog_index
        and previous.resolvers == snap.resolvers
    ):
        _keep_catalog_part(snap, previous)
        if queries is not None and previous.queries_index == queries_index:
            snap.query_targets, snap.query_answers = previous.query_targets, previous.query_answers
        elif queries is not None:
            snap.query_targets = query_targets(snap, catalog, queries)
            snap.query_answers = query_answers(catalog, queries)
        return snap
    _catalog_part(snap, catalog)
    if queries is not None:
        snap.query_targets = query_targets(snap, catalog, queries)
        snap.query_answers = query_answers(catalog, queries)
    return snap


def _keep_catalog_part(snap: MeshSnapshot, previous: MeshSnapshot) -> None:
    """The parts ``_catalog_part`` derives, as ``previous`` has them (never changed after)."""
    snap.services, snap.proxies, snap.endpoints = (
        previous.services, previous.proxies, previous.endpoints
    )  # fmt: skip
    snap.meshed, snap.mesh_gateways = previous.meshed, previous.mesh_gateways
    snap.subset_endpoints = previous.subset_endpoints
    snap.gateways_lan, snap.gateways_wan = previous.gateways_lan, previous.gateways_wan


def _catalog_part(snap: MeshSnapshot, catalog: Catalog) -> None:
    """Everything the snapshot derives from the catalog (instances, health, VIPs): the one
    walk over every instance, which a write of config entries alone does not repeat."""
    healthy = catalog.is_healthy
    instances = catalog.instances()
    subsetted = {k for k, r in snap.resolvers.items() if r.subsets}
    candidates: dict[tuple[str, str], list[Candidate]] = {}
    by_id = {(d.node, d.namespace, d.id): d for d in instances}
    lan: list[Endpoint] = []
    wan: list[Endpoint] = []
    for inst in instances:
        if is_server_service(inst):
            continue  # a catalog record, not part of the mesh (loom.control.selfreg)
        address = inst.address or catalog.node_of(inst).address
        if inst.is_mesh_gateway:
            snap.mesh_gateways.setdefault(inst.id, inst)
            # Not a service of the mesh: only where sidecars and other DCs reach it.
            if healthy(inst):
                here, there = gateway_addresses(inst, address)
                lan.append(here)
                wan.append(there)
            continue
        if inst.proxy is not None:
            snap.proxies.setdefault(inst.id, inst)
            proxy = inst.proxy
            dest = by_id.get((inst.node, inst.namespace, proxy.destination_service_id))
            dkey = (inst.namespace, proxy.destination_service_name)
            snap.meshed.add(dkey)
            if healthy(inst) and dest is not None and healthy(dest):
                snap.endpoints.setdefault(dkey, []).append(Endpoint(address, inst.port))
                if dkey in subsetted:
                    candidates.setdefault(dkey, []).append(_candidate(catalog, inst, dest))
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
    snap.subset_endpoints = select_subsets(snap.resolvers, candidates)
    snap.gateways_lan, snap.gateways_wan = tuple(lan), tuple(wan)


def _configs_part(snap: MeshSnapshot, configs: Configs) -> None:
    """What the snapshot takes from config entries (besides the resolvers)."""
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


def _candidate(catalog: Catalog, side: Instance, dest: Instance) -> Candidate:
    """A healthy sidecar as a ``service-resolver`` subset filter sees its instance."""
    address = side.address or catalog.node_of(side).address
    passing = all(
        c.status == "passing" for c in (*catalog.checks_of(dest), *catalog.checks_of(side))
    )
    return Candidate(
        Endpoint(address, side.port), instance_doc(dest, catalog.node_of(dest)), passing
    )


def gateway_addresses(inst: Instance, address: str) -> tuple[Endpoint, Endpoint]:
    """A mesh gateway's LAN address (``TaggedAddresses["lan"]``, else ``address``:Port) and
    WAN address (``TaggedAddresses["wan"]``, else the LAN one); a tagged address without a
    port takes the instance's."""
    tagged = inst.tagged_addresses
    given = tagged.get("lan")
    here = Endpoint(address, inst.port)
    if given and given.address:
        here = Endpoint(given.address, given.port or inst.port)
    far = tagged.get("wan")
    there = Endpoint(far.address, far.port or here.port) if far and far.address else here
    return here, there


def query_targets(snap: MeshSnapshot, catalog: Catalog, queries: Queries) -> dict[str, QueryTarget]:
    """Each ``prepared_query`` upstream's query, executed for the mesh (Consul executes it
    with ``Connect``): the sidecars of the instances it keeps, healthy themselves."""
    out: dict[str, QueryTarget] = {}
    for inst in snap.proxies.values():
        assert inst.proxy is not None
        for u in inst.proxy.upstreams:
            name = u.destination_name
            if u.destination_type != "prepared_query" or name in out:
                continue
            try:
                q = queries.resolve(name)
            except (NotFound, ValidationError):
                continue  # no such query (yet), or a template that does not render
            connect = replace(q, service=replace(q.service, connect=True))
            done = queries.execute(connect, catalog.settings.node)
            endpoints = tuple(
                Endpoint(side.address or catalog.node_of(side).address, side.port)
                for side, _ in done.hits
            )
            out[name] = QueryTarget(done.service, done.namespace, endpoints)
    return out
