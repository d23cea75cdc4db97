"""Helpers of the DNS proxy's unit tests: a mesh name table, the asking pod's view, queries."""

from __future__ import annotations

from typing import Any

import dns.message
import dns.rdatatype

SEARCH = ("ns1.svc.cluster.local", "svc.cluster.local", "cluster.local")

MESH: dict[str, Any] = {
    "Index": 42,
    "Datacenter": "dc1",
    "ClusterDomain": "cluster.local",
    "Services": [
        {"Name": "productpage", "Namespace": "ns1", "VirtualIPs": ["240.0.0.1"],
         "Instances": [{"Address": "10.0.0.11"}]},
        {"Name": "reviews", "Namespace": "ns2", "VirtualIPs": ["240.0.0.2", "fd00::2"],
         "Instances": [{"Address": "10.0.0.21"}, {"Address": "10.0.0.22"}]},
        {"Name": "web", "Namespace": "default", "Datacenter": "dc1",
         "VirtualIPs": ["240.0.0.3"], "Instances": [{"Address": "10.0.0.31"}]},
        {"Name": "db", "Namespace": "ns2", "VirtualIPs": [],
         "Instances": [{"Address": "10.0.1.1", "Hostname": "db-0"},
                       {"Address": "10.0.1.2", "Hostname": "db-1"},
                       {"Address": "fd00::1:3", "Hostname": "db-2"}]},
        {"Name": "empty", "Namespace": "ns1", "VirtualIPs": [], "Instances": []},
        {"Name": "api", "Namespace": "ns1", "Datacenter": "dc2", "VirtualIPs": ["240.0.5.1"],
         "Instances": [{"Address": "10.2.0.1"}]},
        {"Name": "billing", "Namespace": "default", "Datacenter": "dc2",
         "VirtualIPs": ["240.0.5.2"], "Instances": []},
    ],
    "ExternalHosts": [
        {"Host": "www.example.com", "Service": "example", "Namespace": "ns1",
         "VirtualIPs": ["240.240.0.2"]},
        {"Host": "mysql-instance1.us-east-1.rds.amazonaws.com", "Service": "db1",
         "Namespace": "ns1", "VirtualIPs": ["240.240.0.1", "fd00:f0f0::1"]},
        {"Host": "*.wild.example", "Service": "wild", "Namespace": "ns1", "VirtualIPs": []},
    ],
}


def query(name: str, rdtype: str = "A", *, edns: bool = False, qid: int = 4242) -> bytes:
    """A wire query as a stub resolver sends it (RD set)."""
    msg = dns.message.make_query(name, dns.rdatatype.from_text(rdtype),
                                 use_edns=0 if edns else None)
    msg.id = qid
    return msg.to_wire()


def answer_lines(wire: bytes) -> list[str]:
    """The answer section of a response as ``name ttl class type data`` lines (sorted within
    each RRset: dnspython does not keep the wire order of records)."""
    msg = dns.message.from_wire(wire)
    return [line for rrset in msg.answer for line in sorted(rrset.to_text().splitlines())]
