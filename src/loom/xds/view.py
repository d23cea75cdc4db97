"""The mesh as proxies see it, rebuilt once per store change and shared by every session.

``MeshView.build(state)`` indexes the catalog (healthy sidecar endpoints per service, virtual
IPs, instance addresses), intentions and config entries in one pass, so collecting one
proxy's inputs costs only lookups. ``collect_inputs`` is deterministic given the view and the
leaf certificate; equal inputs mean nothing to push.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loom.ca.authority import Leaf, spiffe_id
from loom.control.state import State
from loom.domain.config_entries import EXTERNAL_SERVICE, MESH, PROXY_DEFAULTS, SERVICE_DEFAULTS
from loom.domain.intentions import DENY, Intention, decide
from loom.domain.services import CONNECT_PROXY
from loom.xds.inputs import (
    AccessRule,
    Endpoint,
    ExposePath,
    ExternalHost,
    Permission,
    Principal,
    ProxyInputs,
    Upstream,
)
from loom.xds.translate.names import sni

Doc = dict[str, Any]
Key = tuple[str, str]  # (namespace, service)


@dataclass
class MeshView:
    index: int
    datacenter: str
    trust_domain: str
    roots_pem: str
    default_allow: bool
    proxies: dict[str, Doc] = field(default_factory=dict)
    """Proxy ID -> instance (first wins when two nodes reuse an ID)."""
    endpoints: dict[Key, list[Endpoint]] = field(default_factory=dict)
    instance_ips: dict[Key, list[str]] = field(default_factory=dict)
    ports: dict[Key, list[int]] = field(default_factory=dict)
    vips: dict[Key, list[str]] = field(default_factory=dict)
    intentions: list[Intention] = field(default_factory=list)
    entries: dict[tuple[str, str, str], Doc] = field(default_factory=dict)
    externals: list[ExternalHost] = field(default_factory=list)
    meshed: set[Key] = field(default_factory=set)
    """Services with at least one sidecar (healthy or not): transparent-proxy upstreams."""

    @classmethod
    def build(cls, state: State) -> MeshView:
        cat, configs = state.catalog, state.configs
        view = cls(
            index=state.store.index,
            datacenter=state.settings.datacenter,
            trust_domain=state.certs.trust_domain,
            roots_pem=state.certs.root.cert_pem,
            default_allow=state.settings.default_allow,
        )
        node_addr = {n["Node"]: n["Address"] for n in state.store.values("nodes")}
        default_addr = state.settings.node_address

        healthy = cat.is_healthy
        instances = cat.instances()
        by_id = {(d["Node"], d["Namespace"], d["ID"]): d for d in instances}
        for inst in instances:
            key = (inst["Namespace"], inst["Service"])
            address = inst["Address"] or node_addr.get(inst["Node"], default_addr)
            if inst["Kind"] == CONNECT_PROXY:
                view.proxies.setdefault(inst["ID"], inst)
                proxy = inst["Proxy"]
                dest = by_id.get((inst["Node"], inst["Namespace"], proxy["DestinationServiceID"]))
                dkey = (inst["Namespace"], proxy["DestinationServiceName"])
                view.meshed.add(dkey)
                if healthy(inst) and dest is not None and healthy(dest):
                    view.endpoints.setdefault(dkey, []).append(Endpoint(address, inst["Port"]))
                continue
            view.endpoints.setdefault(key, [])
            if address and address not in view.instance_ips.setdefault(key, []):
                view.instance_ips[key].append(address)
            if inst["Port"] and inst["Port"] not in view.ports.setdefault(key, []):
                view.ports[key].append(inst["Port"])
            for tag in ("virtual", "consul-virtual"):
                vip = cat.tagged_addresses(inst).get(tag, {}).get("Address")
                if vip and vip not in view.vips.setdefault(key, []):
                    view.vips[key].append(vip)
        view.intentions = configs.intentions()
        for e in configs.entries():
            view.entries[(e["Kind"], e["Namespace"], e["Name"])] = e
        ext_vips = configs.external_vips()
        for e in configs.entries(EXTERNAL_SERVICE):
            for host in e["Hosts"]:
                alloc = ext_vips.get(host)
                if alloc:
                    view.externals.append(
                        ExternalHost(
                            host,
                            e["Name"],
                            (alloc["Address"], alloc["Address6"]),
                            tuple(p["Number"] for p in e["Ports"]),
                        )
                    )
        return view

    def entry(self, kind: str, namespace: str, name: str) -> Doc:
        return self.entries.get((kind, namespace, name)) or {}


def _upstream(view: MeshView, ns: str, name: str, dc: str, **extra: Any) -> Upstream:
    key = (ns, name)
    return Upstream(
        service=name,
        namespace=ns,
        datacenter=dc or view.datacenter,
        spiffe_id=spiffe_id(view.trust_domain, ns, dc or view.datacenter, name),
        sni=sni(name, ns, dc or view.datacenter, view.trust_domain),
        endpoints=tuple(view.endpoints.get(key, ()) if dc in ("", view.datacenter) else ()),
        **extra,
    )


def collect_inputs(
    view: MeshView, proxy_id: str, leaf: Callable[[str, str], Leaf]
) -> ProxyInputs | None:
    """The inputs of proxy ``proxy_id``, or None when no such proxy is registered."""
    inst = view.proxies.get(proxy_id)
    if inst is None:
        return None
    proxy = inst["Proxy"]
    ns, service = inst["Namespace"], proxy["DestinationServiceName"]
    sd = view.entry(SERVICE_DEFAULTS, ns, service)
    pd = view.entry(PROXY_DEFAULTS, "default", "global")
    mesh = view.entry(MESH, "default", "mesh")
    protocol = sd.get("Protocol") or pd.get("Config", {}).get("protocol") or "tcp"
    mtls = sd.get("MutualTLSMode") or pd.get("MutualTLSMode") or "strict"
    mode = proxy["Mode"] or sd.get("Mode") or pd.get("Mode") or "direct"
    transparent = mode == "transparent"
    rules = tuple(
        AccessRule(
            Principal(i.source_ns, i.source),
            i.action != DENY,
            tuple(
                Permission(p["Action"] != DENY, json.dumps(p["HTTP"], sort_keys=True))
                for p in i.permissions
            ),
        )
        for i in view.intentions
        if i.destination_ns in ("*", ns) and i.destination in ("*", service)
    )
    upstreams: list[Upstream] = []
    explicit: set[Key] = set()
    for u in proxy["Upstreams"]:
        if u["DestinationType"] != "service":
            continue
        uns = u["DestinationNamespace"] or ns
        explicit.add((uns, u["DestinationName"]))
        upstreams.append(
            _upstream(
                view, uns, u["DestinationName"], u["Datacenter"],
                bind_address=u["LocalBindAddress"], bind_port=u["LocalBindPort"],
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
            vips = tuple(sorted(view.vips.get(key, ())))
            upstreams.append(
                _upstream(
                    view, uns, name, "",
                    virtual_ips=vips,
                    ports=tuple(sorted(view.ports.get(key, ()))),
                    instance_ips=tuple(sorted(view.instance_ips.get(key, ()))),
                    headless=not vips,
                )
            )  # fmt: skip
    tp = proxy["TransparentProxy"]
    sd_tp = sd.get("TransparentProxy", {})
    outbound_port = tp["OutboundListenerPort"] or sd_tp.get("OutboundListenerPort") or 15001
    cert = leaf(service, ns)
    bind = proxy["Config"].get("bind_address")
    return ProxyInputs(
        proxy_id=proxy_id,
        service=service,
        namespace=ns,
        datacenter=view.datacenter,
        trust_domain=view.trust_domain,
        public_address=bind if isinstance(bind, str) and bind else "0.0.0.0",
        public_port=inst["Port"],
        local_app_address=proxy["LocalServiceAddress"] or "127.0.0.1",
        local_app_port=proxy["LocalServicePort"],
        protocol=protocol,
        mtls_mode=mtls,
        rules=rules,
        default_allow=view.default_allow,
        roots_pem=view.roots_pem,
        leaf_cert_pem=cert.cert_pem,
        leaf_key_pem=cert.key_pem,
        upstreams=tuple(upstreams),
        transparent=transparent,
        outbound_port=outbound_port,
        mesh_destinations_only=bool(mesh.get("TransparentProxy", {}).get("MeshDestinationsOnly")),
        externals=tuple(view.externals) if transparent else (),
        expose=tuple(
            ExposePath(e["ListenerPort"], e["Path"], e["LocalPathPort"], e["Protocol"])
            for e in proxy.get("Expose", {}).get("Paths", [])
        ),
    )
