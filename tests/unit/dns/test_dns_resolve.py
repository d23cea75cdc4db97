"""Which names the proxy answers, with what, and which it forwards: table-driven, pure."""

from __future__ import annotations

import ipaddress

import pytest

from loom.dns.resolve import QTYPE_A, QTYPE_AAAA, Action, Query, View, resolve
from loom.dns.table import NameTable
from tests.unit.dns.dnstest import MESH

MX, TXT, SRV = 15, 16, 33


def outcome(name: str, qtype: int, table: NameTable, view: View) -> str:
    """A resolution as one short line: 'forward', 'forward known', 'nodata', addresses, CNAME."""
    res = resolve(Query(name, qtype), table, view)
    if res.action is Action.FORWARD:
        return "forward known" if res.known else "forward"
    addrs = " ".join(str(ipaddress.ip_address(a)) for a in res.addresses) or "nodata"
    return f"cname {res.cname} -> {addrs}" if res.cname else addrs


CASES = [
    # Kubernetes forms of a service with a virtual IP, in the proxy's namespace (ns1).
    ("productpage", QTYPE_A, "240.0.0.1"),
    ("productpage.ns1", QTYPE_A, "240.0.0.1"),
    ("productpage.ns1.svc", QTYPE_A, "240.0.0.1"),
    ("productpage.ns1.svc.cluster.local", QTYPE_A, "240.0.0.1"),
    ("productpage.ns1.svc.cluster.local.", QTYPE_A, "240.0.0.1"),
    # ... and in another namespace: every form but the bare service name.
    ("reviews.ns2", QTYPE_A, "240.0.0.2"),
    ("reviews.ns2.svc", QTYPE_A, "240.0.0.2"),
    ("reviews.ns2.svc.cluster.local", QTYPE_A, "240.0.0.2"),
    ("reviews", QTYPE_A, "forward"),
    # AAAA, and a known name without the asked family: NODATA, never NXDOMAIN.
    ("reviews.ns2.svc.cluster.local", QTYPE_AAAA, "fd00::2"),
    ("productpage.ns1.svc.cluster.local", QTYPE_AAAA, "nodata"),
    # Case-insensitive.
    ("ProductPage.NS1.svc.Cluster.Local", QTYPE_A, "240.0.0.1"),
    # Headless: every instance, and one pod per hostname.
    ("db.ns2.svc.cluster.local", QTYPE_A, "10.0.1.1 10.0.1.2"),
    ("db.ns2.svc.cluster.local", QTYPE_AAAA, "fd00::1:3"),
    ("db-1.db.ns2.svc.cluster.local", QTYPE_A, "10.0.1.2"),
    ("db-2.db.ns2.svc.cluster.local", QTYPE_A, "nodata"),
    ("db-2.db.ns2.svc.cluster.local", QTYPE_AAAA, "fd00::1:3"),
    ("db-9.db.ns2.svc.cluster.local", QTYPE_A, "forward"),
    ("empty.ns1.svc.cluster.local", QTYPE_A, "nodata"),
    # Consul forms: virtual IPs and healthy instances, own namespace then "default".
    ("productpage.virtual.consul", QTYPE_A, "240.0.0.1"),
    ("productpage.service.consul", QTYPE_A, "10.0.0.11"),
    ("web.virtual.consul", QTYPE_A, "240.0.0.3"),
    ("reviews.service.ns2.ns.consul", QTYPE_A, "10.0.0.21 10.0.0.22"),
    ("reviews.virtual.ns2.ns.dc1.dc.consul", QTYPE_AAAA, "fd00::2"),
    ("productpage.virtual.dc1.consul", QTYPE_A, "240.0.0.1"),
    ("db.virtual.ns2.ns.consul", QTYPE_A, "nodata"),
    ("db.service.ns2.ns.consul", QTYPE_A, "10.0.1.1 10.0.1.2"),
    ("reviews.virtual.consul", QTYPE_A, "forward"),
    ("productpage.other.consul", QTYPE_A, "forward"),
    # Other datacenters: Consul forms, and Kubernetes forms of services only found there.
    ("api.virtual.dc2.consul", QTYPE_A, "240.0.5.1"),
    ("api.service.dc2.consul", QTYPE_A, "10.2.0.1"),
    ("api.virtual.ns1.ns.dc2.dc.consul", QTYPE_A, "240.0.5.1"),
    ("billing.virtual.dc2.consul", QTYPE_A, "240.0.5.2"),
    ("billing.service.dc2.consul", QTYPE_A, "nodata"),
    ("api.virtual.consul", QTYPE_A, "forward"),
    ("api.ns1.svc.cluster.local", QTYPE_A, "240.0.5.1"),
    ("api", QTYPE_A, "240.0.5.1"),
    ("billing.default", QTYPE_A, "240.0.5.2"),
    # External hosts answer their VIPs; wildcard hosts get none and pass through.
    ("www.example.com", QTYPE_A, "240.240.0.2"),
    ("www.example.com", QTYPE_AAAA, "nodata"),
    ("mysql-instance1.us-east-1.rds.amazonaws.com", QTYPE_A, "240.240.0.1"),
    ("mysql-instance1.us-east-1.rds.amazonaws.com", QTYPE_AAAA, "fd00:f0f0::1"),
    ("x.wild.example", QTYPE_A, "forward"),
    # Other types of a known name are forwarded, marked known; unknown names just forwarded.
    ("productpage.ns1.svc.cluster.local", MX, "forward known"),
    ("www.example.com", TXT, "forward known"),
    ("_http._tcp.productpage.ns1.svc.cluster.local", SRV, "forward"),
    ("example.org", QTYPE_A, "forward"),
    # Auto-path: <known>.<search domain> -> CNAME to the canonical name + its records.
    ("productpage.ns1.ns1.svc.cluster.local", QTYPE_A,
     "cname productpage.ns1.svc.cluster.local -> 240.0.0.1"),
    ("reviews.ns2.ns1.svc.cluster.local", QTYPE_AAAA,
     "cname reviews.ns2.svc.cluster.local -> fd00::2"),
    ("reviews.ns2.svc.ns1.svc.cluster.local", QTYPE_A,
     "cname reviews.ns2.svc.cluster.local -> 240.0.0.2"),
    ("www.example.com.ns1.svc.cluster.local", QTYPE_A, "cname www.example.com -> 240.240.0.2"),
    ("www.example.com.ns1.svc.cluster.local", QTYPE_AAAA, "cname www.example.com -> nodata"),
    ("www.example.com.cluster.local", QTYPE_A, "cname www.example.com -> 240.240.0.2"),
    ("Web.Virtual.Consul.ns1.svc.cluster.local", QTYPE_A,
     "cname web.virtual.consul -> 240.0.0.3"),
    ("reviews.ns2.svc.cluster.local.svc.cluster.local", QTYPE_A,
     "cname reviews.ns2.svc.cluster.local -> 240.0.0.2"),
    ("example.org.ns1.svc.cluster.local", QTYPE_A, "forward"),
    ("www.example.com.ns1.svc.cluster.local", MX, "forward"),
    ("ns1.svc.cluster.local", QTYPE_A, "forward"),
    # A name that is itself in the table is answered as itself, not auto-pathed: the pod
    # db-0 of the headless service "db" in ns2 has a name ending in a search domain.
    ("db-0.db.ns2.svc.cluster.local", QTYPE_A, "10.0.1.1"),
]


@pytest.mark.parametrize(("name", "qtype", "expected"), CASES)
def test_each_name_form_resolves_as_the_table_says(
    name: str, qtype: int, expected: str, table: NameTable, view: View
) -> None:
    assert outcome(name, qtype, table, view) == expected


def test_a_table_name_ending_in_a_search_domain_is_answered_as_itself() -> None:
    # A VM whose search list holds "example.com": "www.example.com" is an external host, and
    # also "www" (a mesh service of the proxy's namespace) + the search domain. The exact name
    # wins; auto-path only rewrites names the table does not define.
    table = NameTable.from_json({
        "Datacenter": "dc1",
        "Services": [{"Name": "www", "Namespace": "ns1", "VirtualIPs": ["240.0.0.50"]}],
        "ExternalHosts": [{"Host": "www.example.com", "VirtualIPs": ["240.240.0.2"]}],
    })
    view = View(namespace="ns1", search=("example.com",))
    assert outcome("www.example.com", QTYPE_A, table, view) == "240.240.0.2"
    assert outcome("www.ns1.example.com", QTYPE_A, table, view) == (
        "cname www.ns1.svc.cluster.local -> 240.0.0.50"
    )


def test_the_first_matching_search_domain_wins(table: NameTable) -> None:
    view = View(namespace="ns1", search=("cluster.local", "svc.cluster.local"))
    # Stripping "cluster.local" leaves "reviews.ns2.svc", itself a known name.
    assert outcome("reviews.ns2.svc.cluster.local.cluster.local", QTYPE_A, table, view) == (
        "cname reviews.ns2.svc.cluster.local -> 240.0.0.2"
    )


def test_without_autopath_a_search_suffixed_name_is_forwarded(table: NameTable) -> None:
    view = View(namespace="ns1", search=("ns1.svc.cluster.local",), autopath=False)
    assert outcome("productpage.ns1.ns1.svc.cluster.local", QTYPE_A, table, view) == "forward"


def test_short_names_follow_the_proxys_own_namespace(table: NameTable) -> None:
    assert outcome("reviews", QTYPE_A, table, View(namespace="ns2")) == "240.0.0.2"
    assert outcome("productpage", QTYPE_A, table, View(namespace="ns2")) == "forward"
    assert outcome("reviews.service.consul", QTYPE_A, table, View(namespace="ns2")) == (
        "10.0.0.21 10.0.0.22"
    )


def test_a_pod_cluster_domain_other_than_the_tables_is_an_alias(table: NameTable) -> None:
    view = View(namespace="ns1", cluster_domain="corp.example")
    assert outcome("reviews.ns2.svc.corp.example", QTYPE_A, table, view) == "240.0.0.2"
    assert outcome("reviews.ns2.svc.cluster.local", QTYPE_A, table, view) == "240.0.0.2"


def test_a_table_with_another_cluster_domain_names_services_under_it() -> None:
    table = NameTable.from_json({**MESH, "ClusterDomain": "corp.example"})
    view = View(namespace="ns1", cluster_domain="corp.example")
    assert outcome("reviews.ns2.svc.corp.example", QTYPE_A, table, view) == "240.0.0.2"
    assert outcome("productpage", QTYPE_A, table, view) == "240.0.0.1"
    assert outcome("reviews.ns2.svc.cluster.local", QTYPE_A, table, view) == "forward"
