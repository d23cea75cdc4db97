"""Names of other datacenters: Consul's ``.service.<dc>`` / ``.virtual.<dc>`` and the
Kubernetes names of services found only in another datacenter, with local > remote precedence.

Pure: tables built from JSON, resolved for a pod's view (docs/dns.md, "DNS across datacenters").
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.dns.resolve import QTYPE_A, QTYPE_AAAA, Action, Query, View, resolve
from loom.dns.table import NameTable

VIEW = View(namespace="ns1", search=("ns1.svc.cluster.local", "svc.cluster.local",
                                     "cluster.local"))

TWO_DCS: dict[str, Any] = {
    "Index": 7,
    "Datacenter": "dc1",
    "Services": [
        {"Name": "web", "Namespace": "ns1", "VirtualIPs": ["240.0.0.1"],
         "Instances": [{"Address": "10.1.0.1"}]},
        # dc3 listed before dc2: precedence is by datacenter name, not table order.
        {"Name": "api", "Namespace": "ns1", "Datacenter": "dc3", "VirtualIPs": ["240.241.0.3"],
         "Instances": [{"Address": "10.3.0.1"}]},
        {"Name": "api", "Namespace": "ns1", "Datacenter": "dc2", "VirtualIPs": ["240.241.0.2"],
         "Instances": [{"Address": "10.2.0.1"}, {"Address": "10.2.0.2"}]},
        # Also local: the local one wins every Kubernetes name.
        {"Name": "web", "Namespace": "ns1", "Datacenter": "dc2", "VirtualIPs": ["240.241.0.4"],
         "Instances": [{"Address": "10.2.0.4"}]},
        # Not in the mesh over there: no VIP, Consul's .service name only.
        {"Name": "legacy", "Namespace": "ns2", "Datacenter": "dc2", "VirtualIPs": [],
         "Instances": [{"Address": "10.2.0.7"}]},
        {"Name": "billing", "Namespace": "default", "Datacenter": "dc2",
         "VirtualIPs": ["240.241.0.5"], "Instances": []},
    ],
}


def answer(name: str, table: NameTable, qtype: int = QTYPE_A, view: View = VIEW) -> str:
    res = resolve(Query(name, qtype), table, view)
    if res.action is Action.FORWARD:
        return "forward"
    addrs = " ".join(str(ipaddress.ip_address(a)) for a in res.addresses) or "nodata"
    return f"cname {res.cname} -> {addrs}" if res.cname else addrs


def test_service_names_of_another_datacenter_answer_its_healthy_instances() -> None:
    table = NameTable.from_json(TWO_DCS)
    assert answer("api.service.dc2.consul", table) == "10.2.0.1 10.2.0.2"
    assert answer("api.service.ns1.ns.dc3.dc.consul", table) == "10.3.0.1"
    assert answer("legacy.service.ns2.ns.dc2.dc.consul", table) == "10.2.0.7"
    assert answer("billing.service.dc2.consul", table) == "nodata"
    # Without a datacenter, Consul names are this datacenter's.
    assert answer("api.service.consul", table) == "forward"


def test_virtual_names_of_another_datacenter_answer_the_local_vip_of_that_service() -> None:
    table = NameTable.from_json(TWO_DCS)
    assert answer("api.virtual.dc2.consul", table) == "240.241.0.2"
    assert answer("api.virtual.dc3.consul", table) == "240.241.0.3"
    assert answer("web.virtual.dc2.consul", table) == "240.241.0.4"
    assert answer("web.virtual.consul", table) == "240.0.0.1"
    assert answer("legacy.virtual.ns2.ns.dc2.dc.consul", table) == "nodata"


def test_kubernetes_names_of_a_remote_only_service_answer_the_first_datacenters_vip() -> None:
    table = NameTable.from_json(TWO_DCS)
    for name in ("api", "api.ns1", "api.ns1.svc", "api.ns1.svc.cluster.local"):
        assert answer(name, table) == "240.241.0.2", name
    assert answer("billing.default.svc.cluster.local", table) == "240.241.0.5"
    assert answer("billing", table) == "forward"  # bare names are the proxy's namespace only
    assert answer("billing", table, view=View(namespace="default")) == "240.241.0.5"


def test_a_local_service_wins_its_kubernetes_names_over_every_remote_one() -> None:
    table = NameTable.from_json(TWO_DCS)
    for name in ("web", "web.ns1", "web.ns1.svc", "web.ns1.svc.cluster.local"):
        assert answer(name, table) == "240.0.0.1", name


def test_a_remote_service_without_a_vip_gets_no_kubernetes_names() -> None:
    table = NameTable.from_json(TWO_DCS)
    assert answer("legacy.ns2.svc.cluster.local", table) == "forward"
    assert answer("legacy.ns2", table) == "forward"


def test_autopath_of_a_remote_only_service_cnames_to_its_kubernetes_name() -> None:
    table = NameTable.from_json(TWO_DCS)
    assert answer("api.ns1.ns1.svc.cluster.local", table) == (
        "cname api.ns1.svc.cluster.local -> 240.241.0.2")
    assert answer("api.ns1.svc.cluster.local", table, QTYPE_AAAA) == "nodata"


def test_a_datacenter_without_the_service_lets_the_next_one_by_name_answer() -> None:
    doc = {**TWO_DCS, "Services": [s for s in TWO_DCS["Services"] if s.get("Datacenter") != "dc2"]}
    assert answer("api.ns1", NameTable.from_json(doc)) == "240.241.0.3"


def test_an_old_table_of_one_datacenter_parses_and_answers_as_before() -> None:
    old = {"Index": 3, "Services": [{"Name": "web", "Namespace": "ns1",
                                     "VirtualIPs": ["240.0.0.1"]}]}
    table = NameTable.from_json(old)
    assert answer("web", table) == "240.0.0.1"
    assert answer("web.virtual.dc2.consul", table) == "forward"


labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    local=st.sets(st.tuples(labels, labels), max_size=4),
    remote=st.lists(st.tuples(st.sampled_from(["dc2", "dc3", "dc10"]), labels, labels),
                    max_size=8),
)
def test_every_kubernetes_name_resolves_to_local_first_then_the_first_remote_datacenter(
    local: set[tuple[str, str]], remote: list[tuple[str, str, str]]
) -> None:
    services = [
        {"Name": name, "Namespace": ns, "VirtualIPs": [f"240.0.0.{i + 1}"]}
        for i, (ns, name) in enumerate(sorted(local))
    ] + [
        {"Name": name, "Namespace": ns, "Datacenter": dc, "VirtualIPs": [f"240.241.0.{i + 1}"]}
        for i, (dc, ns, name) in enumerate(remote)
    ]
    table = NameTable.from_json({"Datacenter": "dc1", "Services": services})
    expected: dict[tuple[str, str], str] = {}
    # This datacenter first, then the others in name order (``Federation.datacenters()``).
    for svc in sorted(services, key=lambda s: s.get("Datacenter", "")):
        expected.setdefault((svc["Namespace"], svc["Name"]), svc["VirtualIPs"][0])
    for (ns, name), vip in expected.items():
        fqdn = f"{name}.{ns}.svc.cluster.local"
        got = answer(fqdn, table, view=View(namespace=ns))
        assert got == vip, (fqdn, services)
        assert answer(name, table, view=View(namespace=ns)) == vip
        assert answer(f"{name}.virtual.{ns}.ns.consul", table) == (
            vip if (ns, name) in local else "forward")
