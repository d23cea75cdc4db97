"""Consul's JSON shapes of the core's records and documents: pure functions, no I/O.

Records (nodes, checks) are mapped field by field; stored instance documents already use
AgentService field names; these functions add what is
derived (virtual tagged addresses, health) and rename for the catalog and health endpoints.
"""

from __future__ import annotations

from typing import Any

from loom.control.catalog import Catalog
from loom.domain.records import Check, Node

Doc = dict[str, Any]


def agent_service(cat: Catalog, inst: Doc) -> Doc:
    out: Doc = {
        "ID": inst["ID"],
        "Service": inst["Service"],
        "Tags": inst["Tags"],
        "Meta": inst["Meta"],
        "Port": inst["Port"],
        "Address": inst["Address"],
        "TaggedAddresses": cat.tagged_addresses(inst),
        "Weights": inst["Weights"],
        "EnableTagOverride": inst["EnableTagOverride"],
        "Datacenter": inst["Datacenter"],
        "Namespace": inst["Namespace"],
        "Connect": inst["Connect"],
    }
    if inst["Kind"]:
        out["Kind"] = inst["Kind"]
    if "Proxy" in inst:
        out["Proxy"] = inst["Proxy"]
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


def catalog_service(cat: Catalog, inst: Doc, index: int) -> Doc:
    n = cat.node_of(inst)
    return {
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": n.datacenter,
        "TaggedAddresses": n.tagged_addresses,
        "NodeMeta": n.meta,
        "ServiceKind": inst["Kind"],
        "ServiceID": inst["ID"],
        "ServiceName": inst["Service"],
        "ServiceTags": inst["Tags"],
        "ServiceAddress": inst["Address"],
        "ServiceTaggedAddresses": cat.tagged_addresses(inst),
        "ServiceWeights": inst["Weights"],
        "ServiceMeta": inst["Meta"],
        "ServicePort": inst["Port"],
        "ServiceEnableTagOverride": inst["EnableTagOverride"],
        "ServiceProxy": inst.get("Proxy", {}),
        "ServiceConnect": inst["Connect"],
        "Namespace": inst["Namespace"],
        "CreateIndex": index,
        "ModifyIndex": index,
    }


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
        "Definition": {"TTL": check.ttl} if check.ttl else {},
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def health_entry(cat: Catalog, inst: Doc, checks: list[Check], index: int) -> Doc:
    return {
        "Node": node(cat.node_of(inst)),
        "Service": agent_service(cat, inst),
        "Checks": [health_check(c, index) for c in checks],
    }
