"""Consul's JSON shapes for stored documents: pure functions, no I/O.

Stored instance documents already use AgentService field names; these functions add what is
derived (virtual tagged addresses, health) and rename for the catalog and health endpoints.
"""

from __future__ import annotations

from typing import Any

from loom.control.catalog import Catalog

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


def node(doc: Doc) -> Doc:
    return {
        "ID": doc["ID"],
        "Node": doc["Node"],
        "Address": doc["Address"],
        "Datacenter": doc["Datacenter"],
        "TaggedAddresses": doc["TaggedAddresses"],
        "Meta": doc["Meta"],
    }


def catalog_service(cat: Catalog, inst: Doc, index: int) -> Doc:
    n = cat.node_of(inst)
    return {
        "ID": n["ID"],
        "Node": n["Node"],
        "Address": n["Address"],
        "Datacenter": n["Datacenter"],
        "TaggedAddresses": n["TaggedAddresses"],
        "NodeMeta": n["Meta"],
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


def health_check(check: Doc, index: int) -> Doc:
    return {
        "Node": check["Node"],
        "CheckID": check["CheckID"],
        "Name": check["Name"],
        "Status": check["Status"],
        "Notes": check["Notes"],
        "Output": check["Output"],
        "ServiceID": check["ServiceID"],
        "ServiceName": check["ServiceName"],
        "ServiceTags": [],
        "Type": check["Type"],
        "Namespace": check["Namespace"],
        "Definition": {"TTL": check["TTL"]} if check["TTL"] else {},
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def health_entry(cat: Catalog, inst: Doc, checks: list[Doc], index: int) -> Doc:
    return {
        "Node": node(cat.node_of(inst)),
        "Service": agent_service(cat, inst),
        "Checks": [health_check(c, index) for c in checks],
    }
