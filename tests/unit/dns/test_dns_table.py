"""The name table: parsing the server's JSON, refusing bad input by field, the name index."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from loom.dns.errors import DnsError, TableError
from loom.dns.table import NameTable
from loom.errors import LoomError
from tests.unit.dns.dnstest import MESH

CONTRACT_EXAMPLE = {
    "Index": 42,
    "Datacenter": "dc1",
    "ClusterDomain": "cluster.local",
    "Services": [
        {"Name": "static-server", "Namespace": "default", "Datacenter": "dc1",
         "VirtualIPs": ["240.0.0.3"],
         "Instances": [{"Address": "10.244.0.5", "Hostname": "static-server-7d9f"}]}
    ],
    "ExternalHosts": [
        {"Host": "mysql-instance1.us-east-1.rds.amazonaws.com", "Service": "db1",
         "Namespace": "ns1", "VirtualIPs": ["240.240.0.1", "fd00:f0f0::1"]}
    ],
}


def index_listing(table: NameTable) -> str:
    """Every indexed name with its canonical name and addresses, sorted."""
    return "".join(
        f"{name} -> {records.canonical or '(as asked)'} {' '.join(records.addresses()) or '-'}\n"
        for name, records in sorted(table.names.items())
    )


def test_the_contract_example_parses_into_services_and_external_hosts() -> None:
    table = NameTable.from_json(CONTRACT_EXAMPLE)
    assert (table.index, table.datacenter, table.cluster_domain) == (42, "dc1", "cluster.local")
    [svc] = table.services
    assert (svc.name, svc.namespace, svc.virtual_ips, svc.headless) == (
        "static-server", "default", ("240.0.0.3",), False)
    assert svc.instances[0].hostname == "static-server-7d9f"
    assert table.external_hosts[0].virtual_ips == ("240.240.0.1", "fd00:f0f0::1")
    records = table.lookup("static-server.default.svc.cluster.local")
    assert records is not None and records.addresses() == ["240.0.0.3"]


def test_the_index_of_the_mesh_table_matches_its_golden_listing(golden: Any) -> None:
    golden.check("dns/mesh_index.txt", index_listing(NameTable.from_json(MESH)))


def test_names_and_addresses_are_normalised() -> None:
    table = NameTable.from_json({
        "Datacenter": "DC1",
        "ClusterDomain": "Cluster.Local.",
        "Services": [{"Name": "Web", "Namespace": "NS1", "VirtualIPs": ["FD00:0::0001"]}],
    })
    assert table.datacenter == "dc1" and table.cluster_domain == "cluster.local"
    assert table.services[0].virtual_ips == ("fd00::1",)
    assert "web.ns1.svc.cluster.local" in table.names


def test_optional_fields_default_to_an_empty_table_in_dc1() -> None:
    table = NameTable.from_json({})
    assert (table.index, table.datacenter, table.cluster_domain, len(table.names)) == (
        0, "dc1", "cluster.local", 0)


def test_an_external_host_beats_a_short_service_form_with_the_same_name() -> None:
    # Service "example" in namespace "com" has the short form "example.com".
    table = NameTable.from_json({
        "Services": [{"Name": "example", "Namespace": "com", "VirtualIPs": ["240.0.0.9"]}],
        "ExternalHosts": [{"Host": "example.com", "VirtualIPs": ["240.240.0.9"]}],
    })
    records = table.lookup("example.com")
    assert records is not None and records.addresses() == ["240.240.0.9"]


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(CONTRACT_EXAMPLE)
    target: Any = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


BAD = [
    (["Index"], -1, "Index"),
    (["Index"], True, "Index"),
    (["Datacenter"], "", "Datacenter"),
    (["ClusterDomain"], "bad..domain", "ClusterDomain"),
    (["Services"], {"a": 1}, "Services"),
    (["Services", 0], "web", "Services[0]"),
    (["Services", 0, "Name"], None, "Services[0].Name"),
    (["Services", 0, "Name"], "web.x", "Services[0].Name"),
    (["Services", 0, "Namespace"], "a" * 64, "Services[0].Namespace"),
    (["Services", 0, "VirtualIPs"], "240.0.0.3", "Services[0].VirtualIPs"),
    (["Services", 0, "VirtualIPs", 0], "300.0.0.3", "Services[0].VirtualIPs[0]"),
    (["Services", 0, "Instances", 0, "Address"], "pod", "Services[0].Instances[0].Address"),
    (["Services", 0, "Instances", 0, "Hostname"], "a b", "Services[0].Instances[0].Hostname"),
    (["ExternalHosts", 0, "Host"], 7, "ExternalHosts[0].Host"),
    (["ExternalHosts", 0, "VirtualIPs", 1], "fd00::g", "ExternalHosts[0].VirtualIPs[1]"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD)
def test_a_bad_field_is_refused_with_a_one_line_message_naming_it(
    path: list[Any], value: Any, field: str
) -> None:
    with pytest.raises(TableError) as info:
        NameTable.from_json(_with(path, value))
    message = str(info.value)
    assert message.startswith(f"name table: {field}: expected ")
    assert "\n" not in message
    assert isinstance(info.value, DnsError) and isinstance(info.value, LoomError)


def test_a_table_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TableError, match="name table: expected a JSON object"):
        NameTable.from_json([1, 2])


def test_tables_are_immutable() -> None:
    table = NameTable.from_json(CONTRACT_EXAMPLE)
    with pytest.raises(AttributeError):
        table.index = 43  # type: ignore[misc]
    with pytest.raises(TypeError):
        table.names["x"] = table.names["static-server.default"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"services": []}, "name table: services: unknown field (did you mean 'Services'?)"),
        ({"Services": [{"Name": "a", "Instanecs": []}]},
         "name table: Services[0]: Instanecs: unknown field (did you mean 'Instances'?)"),
        ({"ExternalHosts": [{"Host": "a.com", "VIPs": []}]},
         "name table: ExternalHosts[0]: VIPs: unknown field"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_refused_with_the_nearest_known_one(table: Any, message: str) -> None:
    with pytest.raises(TableError) as err:
        NameTable.from_json(table)
    assert str(err.value).startswith(message)
