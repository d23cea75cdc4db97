"""The name table pushed to DNS proxies, built from the catalog and external services.

Format (documented for ``loom dns-proxy --table`` in docs/dns.md): services with their virtual
IPs and healthy instances, and external hosts with their allocated VIPs. Served as a blocking
query at ``GET /v1/loom/dns-table`` so proxies hold a fresh copy and never ask per query.
"""

from __future__ import annotations

from typing import Any

from loom.control.catalog import Catalog
from loom.control.configs import Configs
from loom.domain.config_entries import EXTERNAL_SERVICE
from loom.domain.services import CONNECT_PROXY

Doc = dict[str, Any]


def build_dns_table(
    catalog: Catalog, configs: Configs, index: int, cluster_domain: str = "cluster.local"
) -> Doc:
    services: dict[tuple[str, str], Doc] = {}
    for inst in catalog.instances():
        if inst["Kind"] == CONNECT_PROXY:
            continue
        key = (inst["Namespace"], inst["Service"])
        entry = services.setdefault(
            key,
            {
                "Name": inst["Service"],
                "Namespace": inst["Namespace"],
                "Datacenter": inst["Datacenter"],
                "VirtualIPs": [],
                "Instances": [],
            },
        )
        tagged = inst["TaggedAddresses"]
        vip = tagged["virtual"]["Address"] if "virtual" in tagged else None
        vip = vip or catalog.vip_of(inst["Namespace"], inst["Service"])
        if vip and vip not in entry["VirtualIPs"]:
            entry["VirtualIPs"].append(vip)
        if catalog.is_healthy(inst):
            address = inst["Address"] or catalog.node_of(inst)["Address"]
            hostname = inst["Meta"].get("pod-name") or inst["ID"]
            entry["Instances"].append({"Address": address, "Hostname": hostname})
    externals = []
    vips = configs.external_vips()
    for entry in configs.entries(EXTERNAL_SERVICE):
        for host in entry["Hosts"]:
            alloc = vips.get(host)
            externals.append(
                {
                    "Host": host,
                    "Service": entry["Name"],
                    "Namespace": entry["Namespace"],
                    "VirtualIPs": [alloc["Address"], alloc["Address6"]] if alloc else [],
                }
            )
    return {
        "Index": index,
        "Datacenter": catalog.settings.datacenter,
        "ClusterDomain": cluster_domain,
        "Services": [services[k] for k in sorted(services)],
        "ExternalHosts": sorted(externals, key=lambda e: e["Host"]),
    }
