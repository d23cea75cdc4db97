"""One proxy's inputs, read off the shared mesh snapshot (``loom.control.snapshot``).

The snapshot, built once per store index for every session (and the DNS table), has already
indexed healthy sidecar endpoints per service, virtual IPs, instance addresses, intentions and
config entries, so collecting one proxy's inputs costs only lookups; what the inputs derive from the
snapshot alone (an upstream's resolution, an intention's access rule) is derived once per
snapshot (``MeshSnapshot.memo``) and shared by every proxy that reads it. ``collect_inputs`` is
deterministic given the snapshot; equal inputs mean nothing to push. Certificates are not
inputs: each proxy's agent holds its key and serves its leaf and roots to Envoy itself. A
mesh gateway's inputs (``collect_gateway_inputs``) are where it listens, every meshed service
of this datacenter with its healthy sidecars, and every other datacenter's gateways.
"""

from __future__ import annotations

from typing import Any

from loom.ca.authority import spiffe_id
from loom.domain.intentions import DENY, Intention, decide
from loom.domain.mesh import MeshSnapshot
from loom.domain.records import Instance
from loom.domain.records import Upstream as UpstreamDef
from loom.domain.resolver import Chain, ResolverGraphError, Target, resolve
from loom.xds.inputs import (
    AccessRule,
    Endpoint,
    ExposeListener,
    FailoverCluster,
    GatewayBind,
    GatewayInputs,
    GatewayRemote,
    GatewayService,
    Permission,
    Principal,
    ProxyInputs,
    Upstream,
)
from loom.xds.translate.names import sni, subset_sni

Doc = dict[str, Any]
Key = tuple[str, str]  # (namespace, service)


def _target_endpoints(view: MeshSnapshot, t: Target, mode: str) -> tuple[Endpoint, ...]:
    """Where a target is dialled. In this datacenter: its sidecars (of the subset, if any).
    In another one, by MeshGateway mode: ``local`` this datacenter's gateways, ``remote``
    that datacenter's, ``none``/unset its sidecars directly (a subset only through a
    gateway: other datacenters publish sidecars, not the metadata a filter reads). A
    datacenter nobody knows: nothing."""
    if t.datacenter == view.datacenter:
        if t.subset:
            return view.subset_endpoints.get((t.namespace, t.service, t.subset), ())
        return tuple(view.endpoints.get((t.namespace, t.service), ()))
    remote = view.remote.get(t.datacenter)
    if remote is None:
        return ()
    if mode == "local":
        return view.gateways_lan
    if mode == "remote":
        return remote.mesh_gateways
    if t.subset:
        return ()
    for svc in remote.services:
        if (svc.namespace, svc.name) == (t.namespace, t.service):
            return svc.endpoints
    return ()


def _upstream(
    view: MeshSnapshot, ns: str, name: str, dc: str, mode: str = "", **extra: Any
) -> Upstream:
    """One upstream, resolved through the ``service-resolver`` entries (redirect, default
    subset, failover; ``loom.domain.resolver``); ``mode`` is its MeshGateway mode. Resolvers
    that cannot be followed (refused on write, so only replicated ones could) give no
    endpoints."""
    dc = dc or view.datacenter
    td = view.trust_domain
    try:
        chain = resolve(view.resolvers, name, ns, dc)
        usable = True
    except ResolverGraphError:
        chain, usable = Chain(Target(name, ns, dc)), False
    p = chain.primary
    failover = tuple(
        FailoverCluster(
            sni=subset_sni(t.subset, t.service, t.namespace, t.datacenter, td),
            spiffe_id=spiffe_id(td, t.namespace, t.datacenter, t.service),
            endpoints=_target_endpoints(view, t, mode),
            connect_timeout_ms=t.connect_timeout_ms,
        )
        for t in chain.failover
    )
    return Upstream(
        service=name,
        namespace=ns,
        datacenter=dc,
        spiffe_id=spiffe_id(td, p.namespace, p.datacenter, p.service),
        sni=subset_sni(p.subset, p.service, p.namespace, p.datacenter, td),
        endpoints=_target_endpoints(view, p, mode) if usable else (),
        connect_timeout_ms=p.connect_timeout_ms,
        failover=failover,
        **extra,
    )


def _query_upstream(view: MeshSnapshot, ns: str, name: str, u: UpstreamDef) -> Upstream:
    """A ``prepared_query`` upstream: the service its query names, dialled at the sidecars
    its execution kept (``MeshSnapshot.query_targets``); no query: no endpoints. Resolvers
    do not apply (Consul's query upstreams bypass the discovery chain)."""
    target = view.query_targets.get(name)
    service = target.service if target is not None else name
    tns = target.namespace if target is not None else ns
    dc = view.datacenter
    return Upstream(
        service=service,
        namespace=tns,
        datacenter=dc,
        spiffe_id=spiffe_id(view.trust_domain, tns, dc, service),
        sni=subset_sni("", service, tns, dc, view.trust_domain),
        endpoints=target.endpoints if target is not None else (),
        bind_address=u.local_bind_address,
        bind_port=u.local_bind_port,
    )


def _remote_transparent_upstreams(
    view: MeshSnapshot, ns: str, service: str, gateway_mode: str
) -> list[Upstream]:
    """Transparent proxy: one upstream per meshed service of another datacenter that has a
    local VIP (``MeshSnapshot.remote_vips``, what DNS answers for ``api.virtual.dc2.consul``
    and, when no local service has the name, ``api.ns1``), matching that VIP on the service's
    ports, with that datacenter as its own: it routes as an explicit ``api:port:dc2``
    upstream with the proxy's MeshGateway mode does (``_upstream`` decides the endpoints).
    Default deny: only services some intention allows this source to reach, as locally."""
    out: list[Upstream] = []
    for dc, state in sorted(view.remote.items()):
        if dc == view.datacenter:
            continue
        for svc in state.services:
            vip = view.remote_vips.get((dc, svc.namespace, svc.name))
            if vip is None or not svc.meshed:
                continue
            if (
                not view.default_allow
                and not decide(
                    view.intentions, ns, service, svc.namespace, svc.name, view.default_allow
                ).allowed
            ):
                continue
            out.append(
                _upstream(
                    view, svc.namespace, svc.name, dc, gateway_mode,
                    virtual_ips=(vip,), ports=tuple(sorted(set(svc.ports))),
                )
            )  # fmt: skip
    return sorted(out, key=lambda u: u.sni)


def _shared(view: MeshSnapshot, name: str) -> dict[Any, Any]:
    """A memo kept with ``view`` (``MeshSnapshot.memo``): what one proxy's inputs derive
    from the snapshot alone is derived once per snapshot, and proxies that dial the same
    upstream share one ``Upstream`` (one object to compare, hash and keep, not one each)."""
    found = view.memo.get(name)
    if found is None:
        found = view.memo[name] = {}
    return found


def _rule(view: MeshSnapshot, i: Intention) -> AccessRule:
    """Intention ``i`` as the access rule of every proxy it targets (one per snapshot)."""
    rules = _shared(view, "xds.rules")
    found = rules.get(id(i))  # the snapshot keeps ``i``: its identity stays its own
    if found is None or found[0] is not i:
        rule = AccessRule(
            Principal(i.source_ns, i.source),
            i.action != DENY,
            tuple(Permission(p.action != DENY, p.http) for p in i.permissions),
        )
        found = rules[id(i)] = (i, rule)
    return found[1]


def _transparent_upstream(
    view: MeshSnapshot, shared: dict[Any, Any], ns: str, name: str, gateway_mode: str
) -> Upstream:
    """Transparent proxy: the upstream of local meshed service ``name`` (matched on its
    virtual IPs, ports and instance addresses), one per snapshot and MeshGateway mode."""
    key = ("transparent", ns, name, gateway_mode)
    found = shared.get(key)
    if found is None:
        svc = view.services.get((ns, name))
        vips = tuple(sorted(svc.vips)) if svc else ()
        found = shared[key] = _upstream(
            view, ns, name, "", gateway_mode,
            virtual_ips=vips,
            ports=tuple(sorted(svc.ports)) if svc else (),
            instance_ips=tuple(sorted(svc.instance_ips)) if svc else (),
            headless=not vips,
        )  # fmt: skip
    return found


def collect_inputs(view: MeshSnapshot, proxy_id: str) -> ProxyInputs | GatewayInputs | None:
    """The inputs of proxy ``proxy_id`` (a sidecar or a mesh gateway), or None when no such
    proxy is registered."""
    inst = view.proxies.get(proxy_id)
    if inst is None:
        return collect_gateway_inputs(view, proxy_id)
    proxy = inst.proxy
    assert proxy is not None  # the snapshot's proxies are connect-proxy instances
    ns, service = inst.namespace, proxy.destination_service_name
    shared = _shared(view, "xds.upstreams")
    sd = view.defaults_of(ns, service)
    pd = view.proxy_defaults
    protocol = sd.protocol or pd.config.get("protocol") or "tcp"
    mtls = sd.mutual_tls_mode or pd.mutual_tls_mode or "strict"
    mode = proxy.mode or sd.mode or pd.mode or "direct"
    transparent = mode == "transparent"
    rules = tuple(
        _rule(view, i)
        for i in view.intentions
        if i.destination_ns in ("*", ns) and i.destination in ("*", service)
    )
    upstreams: list[Upstream] = []
    explicit: set[Key] = set()
    # MeshGateway mode: upstream > registration > service-defaults > proxy-defaults.
    gateway_mode = proxy.mesh_gateway or sd.mesh_gateway or pd.mesh_gateway
    for u in proxy.upstreams:
        if u.destination_type == "prepared_query":
            upstreams.append(_query_upstream(view, ns, u.destination_name, u))
            continue
        if u.destination_type != "service":
            continue
        uns = u.destination_namespace or ns
        explicit.add((uns, u.destination_name))
        gw_mode = u.mesh_gateway or gateway_mode
        ukey = ("explicit", uns, u.destination_name, u.datacenter, gw_mode,
               u.local_bind_address, u.local_bind_port)  # fmt: skip
        found = shared.get(ukey)
        if found is None:
            found = shared[ukey] = _upstream(
                view, uns, u.destination_name, u.datacenter, gw_mode,
                bind_address=u.local_bind_address, bind_port=u.local_bind_port,
            )  # fmt: skip
        upstreams.append(found)
    if transparent:
        for key in sorted(view.meshed):
            uns, name = key
            if key == (ns, service):
                continue
            # Default allow: every mesh service is an upstream and the destination's RBAC
            # rejects denied sources (curl exits 52, as in the seed). Default deny: only
            # destinations some intention allows this source to reach.
            if (
                not view.default_allow
                and not decide(view.intentions, ns, service, uns, name, view.default_allow).allowed
            ):
                continue
            upstreams.append(_transparent_upstream(view, shared, uns, name, gateway_mode))
        upstreams += _remote_transparent_upstreams(view, ns, service, gateway_mode)
    outbound_port = (
        proxy.transparent_proxy.outbound_listener_port
        or sd.transparent_proxy.outbound_listener_port
        or 15001
    )
    bind = proxy.config.get("bind_address")
    return ProxyInputs(
        proxy_id=proxy_id,
        service=service,
        namespace=ns,
        datacenter=view.datacenter,
        trust_domain=view.trust_domain,
        public_address=bind if isinstance(bind, str) and bind else "0.0.0.0",
        public_port=inst.port,
        local_app_address=proxy.local_service_address or "127.0.0.1",
        local_app_port=proxy.local_service_port,
        protocol=protocol,
        mtls_mode=mtls,
        rules=rules,
        default_allow=view.default_allow,
        upstreams=tuple(upstreams),
        transparent=transparent,
        outbound_port=outbound_port,
        mesh_destinations_only=view.mesh.mesh_destinations_only,
        externals=tuple(e for e in view.externals if e.virtual_ips) if transparent else (),
        expose=tuple(
            ExposeListener(e.listener_port, e.path, e.local_path_port, e.protocol)
            for e in (proxy.expose.paths if proxy.expose is not None else ())
        ),
    )


NO_DEFAULT_BIND = ("envoy_gateway_no_default_bind", "envoy_mesh_gateway_no_default_bind")
BIND_TAGGED = ("envoy_gateway_bind_tagged_addresses", "envoy_mesh_gateway_bind_tagged_addresses")
BIND_ADDRESSES = ("envoy_gateway_bind_addresses", "envoy_mesh_gateway_bind_addresses")
"""Consul's ``Proxy.Config`` keys of a gateway's listeners (the second: its older spelling);
``loom.domain.services`` checks their values when the gateway is registered."""


def _flag(config: dict[str, Any], keys: tuple[str, ...]) -> bool:
    return any(config.get(k) in (True, "true", "True", "1") for k in keys)


def _binds(inst: Instance, config: dict[str, Any]) -> tuple[GatewayBind, ...]:
    """Where the gateway listens, as Consul decides: its ``Address:Port`` (``0.0.0.0`` for no
    address) unless told not to, and its ``lan``/``wan`` tagged addresses when told to (what
    ``loom connect envoy -register`` says when both are addresses of its host), then the
    named addresses of ``envoy_gateway_bind_addresses`` (``-bind-address NAME=ADDR:PORT``)."""
    binds = []
    if not _flag(config, NO_DEFAULT_BIND):
        binds.append(GatewayBind("default", inst.address or "0.0.0.0", inst.port))
    if _flag(config, BIND_TAGGED):
        for name in ("lan", "wan"):
            tagged = inst.tagged_addresses.get(name)
            if tagged is not None and tagged.address:
                binds.append(GatewayBind(name, tagged.address, tagged.port or inst.port))
    for key in BIND_ADDRESSES:
        named = config.get(key)
        for name, addr in sorted(named.items()) if isinstance(named, dict) else ():
            if isinstance(addr, dict) and isinstance(addr.get("Address"), str):
                port = addr.get("Port")
                binds.append(
                    GatewayBind(name, addr["Address"], port if isinstance(port, int) else 0)
                )
    seen: set[tuple[str, int]] = set()
    unique = []
    for b in binds:
        if (b.address, b.port) not in seen:
            seen.add((b.address, b.port))
            unique.append(b)
    return tuple(unique)


def collect_gateway_inputs(view: MeshSnapshot, proxy_id: str) -> GatewayInputs | None:
    """The inputs of mesh gateway ``proxy_id``, or None when no such gateway is registered.

    Its own health does not matter here (an unhealthy gateway keeps its configuration; other
    proxies stop using it); the sidecars it routes to are the healthy ones only."""
    inst = view.mesh_gateways.get(proxy_id)
    if inst is None:
        return None
    config = inst.proxy.config if inst.proxy is not None else {}
    td, dc = view.trust_domain, view.datacenter
    timeout = config.get("connect_timeout_ms")
    return GatewayInputs(
        proxy_id=proxy_id,
        service=inst.service,
        namespace=inst.namespace,
        datacenter=dc,
        trust_domain=td,
        binds=_binds(inst, config),
        services=tuple(
            GatewayService(sni(name, ns, dc, td), tuple(view.endpoints.get((ns, name), ())))
            for ns, name in sorted(view.meshed)
        )
        # service-resolver subsets, by their own SNI, for callers in other datacenters.
        + tuple(
            GatewayService(subset_sni(sub, name, ns, dc, td), endpoints)
            for (ns, name, sub), endpoints in sorted(view.subset_endpoints.items())
        ),
        remotes=tuple(
            GatewayRemote(other, f"{other}.internal.{td}", tuple(state.mesh_gateways))
            for other, state in sorted(view.remote.items())
            if other != dc and state.mesh_gateways
        ),
        connect_timeout_ms=timeout
        if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0
        else 5000,
    )
