"""One proxy's inputs, read off the shared mesh snapshot (``loom.control.snapshot``).

The snapshot, built once per store index for every session (and the DNS table), has already
indexed healthy sidecar endpoints per service, virtual IPs, instance addresses, intentions and
config entries, so collecting one proxy's inputs costs only lookups. ``collect_inputs`` is
deterministic given the snapshot; equal inputs mean nothing to push. Certificates are not
inputs: each proxy's agent holds its key and serves its leaf and roots to Envoy itself.
"""

from __future__ import annotations

from typing import Any

from loom.ca.authority import spiffe_id
from loom.domain.intentions import DENY, decide
from loom.domain.mesh import MeshSnapshot
from loom.domain.records import Upstream as UpstreamDef
from loom.domain.resolver import Chain, ResolverGraphError, Target, resolve
from loom.xds.inputs import (
    AccessRule,
    Endpoint,
    ExposeListener,
    FailoverCluster,
    Permission,
    Principal,
    ProxyInputs,
    Upstream,
)
from loom.xds.translate.names import subset_sni

Doc = dict[str, Any]
Key = tuple[str, str]  # (namespace, service)


def _target_endpoints(view: MeshSnapshot, t: Target, mode: str) -> tuple[Endpoint, ...]:
    """Where a target is dialled: this datacenter's sidecars (of the subset, if any)."""
    if t.datacenter != view.datacenter:
        return ()
    if t.subset:
        return view.subset_endpoints.get((t.namespace, t.service, t.subset), ())
    return tuple(view.endpoints.get((t.namespace, t.service), ()))


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


def collect_inputs(view: MeshSnapshot, proxy_id: str) -> ProxyInputs | None:
    """The inputs of proxy ``proxy_id``, or None when no such proxy is registered."""
    inst = view.proxies.get(proxy_id)
    if inst is None:
        return None
    proxy = inst.proxy
    assert proxy is not None  # the snapshot's proxies are connect-proxy instances
    ns, service = inst.namespace, proxy.destination_service_name
    sd = view.defaults_of(ns, service)
    pd = view.proxy_defaults
    protocol = sd.protocol or pd.config.get("protocol") or "tcp"
    mtls = sd.mutual_tls_mode or pd.mutual_tls_mode or "strict"
    mode = proxy.mode or sd.mode or pd.mode or "direct"
    transparent = mode == "transparent"
    rules = tuple(
        AccessRule(
            Principal(i.source_ns, i.source),
            i.action != DENY,
            tuple(Permission(p.action != DENY, p.http) for p in i.permissions),
        )
        for i in view.intentions
        if i.destination_ns in ("*", ns) and i.destination in ("*", service)
    )
    upstreams: list[Upstream] = []
    explicit: set[Key] = set()
    for u in proxy.upstreams:
        if u.destination_type == "prepared_query":
            upstreams.append(_query_upstream(view, ns, u.destination_name, u))
            continue
        if u.destination_type != "service":
            continue
        uns = u.destination_namespace or ns
        explicit.add((uns, u.destination_name))
        gw_mode = u.mesh_gateway or proxy.mesh_gateway or sd.mesh_gateway or pd.mesh_gateway
        upstreams.append(
            _upstream(
                view, uns, u.destination_name, u.datacenter, gw_mode,
                bind_address=u.local_bind_address, bind_port=u.local_bind_port,
            )
        )  # fmt: skip
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
            svc = view.services.get(key)
            vips = tuple(sorted(svc.vips)) if svc else ()
            upstreams.append(
                _upstream(
                    view, uns, name, "",
                    virtual_ips=vips,
                    ports=tuple(sorted(svc.ports)) if svc else (),
                    instance_ips=tuple(sorted(svc.instance_ips)) if svc else (),
                    headless=not vips,
                )
            )  # fmt: skip
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
