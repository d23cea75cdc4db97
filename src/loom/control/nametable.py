"""The name table pushed to DNS proxies, derived from the mesh snapshot.

Format (documented for ``loom dns-proxy --table`` in docs/dns.md): services with their virtual
IPs and healthy instances, and external hosts with their allocated VIPs. Served as a blocking
query at ``GET /v1/loom/dns-table`` so proxies hold a fresh copy and never ask per query;
``loom.dns.table.NameTable.from_json`` is its reader. Pure: the snapshot holds everything.
"""

from __future__ import annotations

import json
from typing import Any

from loom.domain.mesh import MeshSnapshot

Doc = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"


def build_name_table(snapshot: MeshSnapshot, cluster_domain: str = CLUSTER_DOMAIN) -> Doc:
    """The table as JSON-ready data, services by (namespace, name), hosts by name."""
    services = [
        {
            "Name": svc.name,
            "Namespace": svc.namespace,
            "Datacenter": svc.datacenter,
            "VirtualIPs": list(svc.dns_vips),
            "Instances": [{"Address": i.address, "Hostname": i.hostname} for i in svc.healthy],
        }
        for _, svc in sorted(snapshot.services.items())
    ]
    externals = [
        {
            "Host": e.host,
            "Service": e.service,
            "Namespace": e.namespace,
            "VirtualIPs": list(e.virtual_ips),
        }
        for e in sorted(snapshot.externals, key=lambda e: e.host)
    ]
    return {
        "Index": snapshot.mesh_index,
        "Datacenter": snapshot.datacenter,
        "ClusterDomain": cluster_domain,
        "Services": services,
        "ExternalHosts": externals,
    }


def name_table_text(snapshot: MeshSnapshot) -> str:
    """The table serialized, once per snapshot: every watching proxy gets the same bytes."""
    text = snapshot.memo.get("name_table")
    if not isinstance(text, str):
        text = snapshot.memo["name_table"] = json.dumps(build_name_table(snapshot))
    return text
