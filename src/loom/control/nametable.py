"""The name table pushed to DNS proxies, derived from the mesh snapshot.

Format (documented for ``loom dns-proxy --table`` in docs/dns.md): services with their virtual
IPs and healthy instances, and external hosts with their allocated VIPs. Served as a blocking
query at ``GET /v1/loom/dns-table`` so proxies hold a fresh copy and never ask per query;
``loom.dns.table.NameTable.from_json`` is its reader. Pure: the snapshot holds everything.

Services of other datacenters (``MeshSnapshot.remote``) are entries of the same list with
their own ``Datacenter``: their healthy instances' addresses, and as ``VirtualIPs`` the local
VIP this server allocated for them (``loom.control.remotevips``), so a table with them still
parses where an older proxy reads it. What a peer says is not trusted to be DNS-safe: a
service whose name, namespace or datacenter is not a DNS label is left out (the allocator
logs and counts it), and only addresses that are IP addresses are listed. The same holds
for this datacenter's catalog-only services with names Consul accepts but DNS cannot serve
(``api.v1``, a name over 63 characters): they are left out, as Consul's DNS leaves them out.

Prepared queries executed for DNS (``loom.control.dnsqueries``) are the ``Queries`` list,
one entry per query name or ID (as its hash: the table must not disclose IDs) with its TTL
and its instances' addresses and ports; the key is absent when there are none, so a table
without queries is one older proxies still read.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from loom.domain.mesh import MeshSnapshot

Doc = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"
MAX_REMOTE_ADDRESSES = 256
"""Instance addresses listed per service of another datacenter (the first of its state):
a peer's state may hold thousands, and no DNS answer needs more."""

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _label_problem(value: object) -> bool:
    return (
        not isinstance(value, str)
        or not 0 < len(value) <= 63
        or not set(value.lower()) <= _LABEL_CHARS
    )


def _instance(address: str, hostname: str) -> Doc:
    """One healthy instance as the table lists it. Its hostname (pod name, else service ID)
    names it under a headless service only when it is a DNS label: an ID like ``web.1`` or
    ``redis:6379`` (valid in Consul) is left out, not allowed to make the whole table
    unreadable for every DNS proxy."""
    if not hostname or _label_problem(hostname):
        return {"Address": address}
    return {"Address": address, "Hostname": hostname}


def remote_name_problem(datacenter: str, namespace: str, name: str) -> str | None:
    """Why a service of another datacenter cannot have DNS names (None: it can), in a line
    that shows the offending parts shortened."""
    for what, value in (("datacenter", datacenter), ("namespace", namespace), ("name", name)):
        if _label_problem(value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            where = f"a service of datacenter {datacenter[:63]!r}"
            return f"{where}: its {what} {shown} is not a DNS label"
    return None


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def remote_services(snapshot: MeshSnapshot) -> list[Doc]:
    """Table entries of the other datacenters' services: datacenters by name, services by
    (namespace, name), DNS-unsafe ones and repeats (names are case-insensitive) left out."""
    out: list[Doc] = []
    for dc in sorted(snapshot.remote):
        if dc == snapshot.datacenter:
            continue
        seen: set[tuple[str, str]] = set()
        state = snapshot.remote[dc]
        for svc in sorted(state.services, key=lambda s: (s.namespace, s.name)):
            if remote_name_problem(dc, svc.namespace, svc.name) is not None:
                continue
            key = (svc.namespace.lower(), svc.name.lower())
            if key in seen:
                continue
            seen.add(key)
            vip = snapshot.remote_vips.get((dc, svc.namespace, svc.name))
            addresses = [a for a in map(_ip, svc.addresses) if a is not None]
            out.append(
                {
                    "Name": svc.name,
                    "Namespace": svc.namespace,
                    "Datacenter": dc,
                    "VirtualIPs": [vip] if vip else [],
                    "Instances": [{"Address": a} for a in addresses[:MAX_REMOTE_ADDRESSES]],
                }
            )
    return out


def build_name_table(snapshot: MeshSnapshot, cluster_domain: str = CLUSTER_DOMAIN) -> Doc:
    """The table as JSON-ready data: this datacenter's services by (namespace, name), then
    the other datacenters' (``remote_services``), hosts by name."""
    services = [
        {
            "Name": svc.name,
            "Namespace": svc.namespace,
            "Datacenter": svc.datacenter,
            "VirtualIPs": list(svc.dns_vips),
            "Instances": [_instance(i.address, i.hostname) for i in svc.healthy],
        }
        for _, svc in sorted(snapshot.services.items())
        if not _label_problem(svc.name)  # ``api.v1``: registered, "not discoverable via DNS"
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
    table: Doc = {
        "Index": snapshot.mesh_index,
        "Datacenter": snapshot.datacenter,
        "ClusterDomain": cluster_domain,
        "Services": services + remote_services(snapshot),
        "ExternalHosts": externals,
    }
    if snapshot.query_answers:  # absent without queries: a table older proxies still read
        table["Queries"] = query_entries(snapshot)
    return table


def query_entries(snapshot: MeshSnapshot) -> list[Doc]:
    """The prepared queries' DNS answers (``loom.control.dnsqueries``), by name: each a
    ``<name>.query.consul`` of the proxies; a query's ID as ``IDHash`` (never the ID)."""
    return [
        {
            **({"IDHash": name[1:]} if name.startswith("#") else {"Name": name}),
            "Service": answer.service,
            "TTL": answer.ttl,
            "Ordered": answer.ordered,
            "Instances": [{"Address": e.address, "Port": e.port} for e in answer.endpoints],
        }
        for name, answer in sorted(snapshot.query_answers.items())
    ]


def name_table_text(snapshot: MeshSnapshot) -> str:
    """The table serialized, once per snapshot: every watching proxy gets the same bytes."""
    text = snapshot.memo.get("name_table")
    if not isinstance(text, str):
        text = snapshot.memo["name_table"] = json.dumps(build_name_table(snapshot))
    return text
