"""Consul's JSON shapes of the core's records: pure functions, no I/O.

Records are mapped field by field to Consul's AgentService, catalog, health, config entry and
intention shapes, with what is derived (virtual tagged addresses, health, precedence) added.
Key order follows Consul's (for config entries: the order Loom has always answered with).
"""

from __future__ import annotations

from typing import Any

from loom.ca.authority import Leaf
from loom.control.catalog import Catalog
from loom.domain.checks import definition_doc, go_duration
from loom.domain.entries import (
    ConfigEntry,
    IntentionPermission,
)
from loom.domain.intentions import Intention
from loom.domain.records import (
    Check,
    Instance,
    Node,
    Proxy,
    TaggedAddress,
    TransparentProxySettings,
    Upstream,
)
from loom.store.entry_codec import encode as encode_entry
from loom.store.entry_codec import http_match_doc

Doc = dict[str, Any]


def _tagged(tagged: dict[str, TaggedAddress]) -> dict[str, Doc]:
    return {tag: {"Address": t.address, "Port": t.port} for tag, t in tagged.items()}


def _upstream(u: Upstream) -> Doc:
    return {
        "DestinationType": u.destination_type,
        "DestinationName": u.destination_name,
        "DestinationNamespace": u.destination_namespace,
        "Datacenter": u.datacenter,
        "LocalBindAddress": u.local_bind_address,
        "LocalBindPort": u.local_bind_port,
        "Config": u.config,
        **({"MeshGateway": {"Mode": u.mesh_gateway}} if u.mesh_gateway else {}),
    }


def _tproxy(t: TransparentProxySettings) -> Doc:
    return {"OutboundListenerPort": t.outbound_listener_port, "DialedDirectly": t.dialed_directly}


def proxy(p: Proxy) -> Doc:
    out: Doc = {
        "DestinationServiceName": p.destination_service_name,
        "DestinationServiceID": p.destination_service_id,
        "LocalServiceAddress": p.local_service_address,
        "LocalServicePort": p.local_service_port,
        "Mode": p.mode,
        "TransparentProxy": _tproxy(p.transparent_proxy),
        "Upstreams": [_upstream(u) for u in p.upstreams],
        "Config": p.config,
    }
    if p.expose is not None:
        out["Expose"] = {
            "Checks": p.expose.checks,
            "Paths": [
                {
                    "ListenerPort": e.listener_port,
                    "Path": e.path,
                    "LocalPathPort": e.local_path_port,
                    "Protocol": e.protocol,
                }
                for e in p.expose.paths
            ],
        }
    if p.mesh_gateway:
        out["MeshGateway"] = {"Mode": p.mesh_gateway}
    return out


def _weights(inst: Instance) -> Doc:
    return {"Passing": inst.weights.passing, "Warning": inst.weights.warning}


def agent_service(cat: Catalog, inst: Instance) -> Doc:
    out: Doc = {
        "ID": inst.id,
        "Service": inst.service,
        "Tags": list(inst.tags),
        "Meta": inst.meta,
        "Port": inst.port,
        "Address": inst.address,
        "TaggedAddresses": _tagged(cat.tagged_addresses(inst)),
        "Weights": _weights(inst),
        "EnableTagOverride": inst.enable_tag_override,
        "Datacenter": inst.datacenter,
        "Namespace": inst.namespace,
        "Connect": {"Native": inst.connect_native},
    }
    if inst.kind:
        out["Kind"] = inst.kind
    if inst.proxy is not None:
        out["Proxy"] = proxy(inst.proxy)
    return out


def node(n: Node) -> Doc:
    return {
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": n.datacenter,
        "TaggedAddresses": n.tagged_addresses,
        "Meta": n.meta,
    }


def catalog_service(cat: Catalog, inst: Instance, index: int) -> Doc:
    n = cat.node_of(inst)
    return {
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": n.datacenter,
        "TaggedAddresses": n.tagged_addresses,
        "NodeMeta": n.meta,
        "ServiceKind": inst.kind,
        "ServiceID": inst.id,
        "ServiceName": inst.service,
        "ServiceTags": list(inst.tags),
        "ServiceAddress": inst.address,
        "ServiceTaggedAddresses": _tagged(cat.tagged_addresses(inst)),
        "ServiceWeights": _weights(inst),
        "ServiceMeta": inst.meta,
        "ServicePort": inst.port,
        "ServiceEnableTagOverride": inst.enable_tag_override,
        "ServiceProxy": proxy(inst.proxy) if inst.proxy is not None else {},
        "ServiceConnect": {"Native": inst.connect_native},
        "Namespace": inst.namespace,
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def _timing(check: Check) -> Doc:
    """Consul's top-level ``Interval``/``Timeout`` of a check that runs (absent otherwise)."""
    d = check.definition
    if d is None or not d.interval_s:
        return {}
    return {"Interval": go_duration(d.interval_s), "Timeout": go_duration(d.timeout_s)}


def health_check(check: Check, index: int) -> Doc:
    return {
        "Node": check.node,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": [],
        "Type": check.type,
        "Namespace": check.namespace,
        **_timing(check),
        "Definition": definition_doc(check.definition, check.ttl),
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def health_entry(cat: Catalog, inst: Instance, checks: list[Check], index: int) -> Doc:
    return {
        "Node": node(cat.node_of(inst)),
        "Service": agent_service(cat, inst),
        "Checks": [health_check(c, index) for c in checks],
    }


# -- config entries and intentions ---------------------------------------------------------------


def _permission(p: IntentionPermission) -> Doc:
    return {"Action": p.action, "HTTP": http_match_doc(p.http)}


def config_entry(e: ConfigEntry) -> Doc:
    """A config entry as ``/v1/config`` answers it: the stored document is Consul's API shape
    already (``loom.store.entry_codec``), so one encoder serves both; split it here the day the
    two must differ."""
    return encode_entry(e)


def intention(i: Intention, index: int) -> Doc:
    """Consul's legacy Intention JSON (``/v1/connect/intentions``)."""
    return {
        "ID": i.id,
        "Description": i.description,
        "SourceNS": i.source_ns,
        "SourceName": i.source,
        "DestinationNS": i.destination_ns,
        "DestinationName": i.destination,
        "SourceType": "consul",
        "Action": i.action,
        "Permissions": [_permission(p) for p in i.permissions],
        "Precedence": i.precedence,
        "Meta": {},
        "CreateIndex": i.create_index or index,
        "ModifyIndex": i.modify_index or index,
    }


def issued_cert(leaf: Leaf, namespace: str) -> Doc:
    """Consul's IssuedCert; ``PrivateKeyPEM`` only for a leaf whose key the CA made (the
    Consul-compatible leaf endpoint), never for a CSR's."""
    out: Doc = {"SerialNumber": leaf.serial, "CertPEM": leaf.cert_pem}
    if leaf.key_pem:
        out["PrivateKeyPEM"] = leaf.key_pem
    out.update(
        {
            "Service": leaf.service,
            "ServiceURI": leaf.uri,
            "ValidAfter": leaf.not_before.isoformat(),
            "ValidBefore": leaf.not_after.isoformat(),
            "Namespace": namespace,
        }
    )
    return out


# -- reads by node -------------------------------------------------------------------------------


def indexed_node(n: Node, index: int) -> Doc:
    """A node with its raft indexes, as ``/v1/catalog/nodes`` and ``/v1/catalog/node`` show it."""
    return {**node(n), "CreateIndex": index, "ModifyIndex": index}


def node_service(cat: Catalog, inst: Instance, index: int) -> Doc:
    """Consul's NodeService: an AgentService with its raft indexes."""
    return {**agent_service(cat, inst), "CreateIndex": index, "ModifyIndex": index}
