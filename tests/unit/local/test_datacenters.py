"""Where each datacenter of the one-machine mesh lives (``loom.local.datacenters``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from loom.local.datacenters import BaseLayout, index_of, layout, wan_layout
from loom.local.errors import LocalError
from loom.local.gateway import registration
from loom.local.netns import LocalNetSettings, pod_mac

BASE = BaseLayout()


def test_the_default_datacenter_is_the_mesh_of_one_datacenter_unchanged() -> None:
    dc1 = layout(BASE)
    assert (dc1.prefix, dc1.subnet, dc1.state_dir, dc1.data_dir) == (
        "loom", "10.244.0.0/16", Path("/run/loom/local"), Path("/var/lib/loom/local"),
    )  # fmt: skip
    assert (dc1.http_addr, dc1.grpc_addr, dc1.index) == ("127.0.0.1:8500", "127.0.0.1:8502", 0)


def test_dc2_sits_beside_dc1_with_nothing_shared() -> None:
    dc2 = layout(BASE, "dc2")
    assert dc2.prefix == "loomdc2"
    assert dc2.subnet == "10.245.0.0/16"
    assert dc2.state_dir == Path("/run/loom/local-dc2")
    assert dc2.data_dir == Path("/var/lib/loom/local-dc2")
    assert (dc2.http_addr, dc2.grpc_addr) == ("127.0.0.1:8510", "127.0.0.1:8512")
    assert (layout(BASE).first_uid, dc2.first_uid) == (60000, 201000)


def test_no_two_datacenters_share_a_prefix_subnet_directory_or_port() -> None:
    names = ["dc1", "dc2", "dc3", "dc9", "east", "west-1", "wan"]
    layouts = [layout(BaseLayout(subnet="10.100.0.0/16"), n) for n in names]
    for attr in ("prefix", "subnet", "state_dir", "http_addr", "grpc_addr", "first_uid"):
        values = [getattr(x, attr) for x in layouts]
        assert len(set(values)) == len(values), attr
    nets = [ipaddress.IPv4Network(x.subnet) for x in layouts]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    wan = wan_layout(BASE)
    assert wan.prefix not in {x.prefix for x in layouts if x.datacenter != "wan"}


def test_every_prefix_is_one_the_node_network_accepts() -> None:
    base = BaseLayout(prefix="lt12345")  # a test's prefix: too long to take "dc2" as it is
    for name in ("dc2", "dc10", "east"):
        prefix = layout(base, name).prefix
        LocalNetSettings(prefix=prefix, subnet="10.9.0.0/16")  # raises if not
        assert prefix.startswith("lt12")
    assert layout(base, "dc2").prefix != layout(base, "dc3").prefix


def test_datacenters_named_dcn_take_n_minus_one_and_others_a_hashed_index() -> None:
    assert [index_of(n) for n in ("dc1", "dc2", "dc10")] == [0, 1, 9]
    assert 100 <= index_of("east") < 116
    assert index_of("east") == index_of("east")


def test_a_bad_datacenter_name_or_a_subnet_outside_the_private_block_is_refused() -> None:
    for bad in ("DC2", "dc_2", "-dc", ""):
        with pytest.raises(LocalError, match="datacenter"):
            layout(BASE, bad)
    assert layout(BaseLayout(subnet="10.255.0.0/16"), "dc2").subnet == "10.0.0.0/16"  # wraps
    with pytest.raises(LocalError, match="no private subnet"):
        layout(BaseLayout(subnet="192.168.0.0/16"), "dc2")


def test_each_gateway_takes_the_wan_address_of_its_datacenter_index() -> None:
    wan = wan_layout(BASE)
    assert (wan.prefix, wan.subnet, wan.state_dir) == (
        "loomwan", "10.243.0.0/24", Path("/run/loom/local-wan"),
    )  # fmt: skip
    assert [wan.address(layout(BASE, n).index) for n in ("dc1", "dc2")] == [
        "10.243.0.2", "10.243.0.3",
    ]  # fmt: skip
    with pytest.raises(LocalError, match="no address"):
        wan.address(300)


def test_a_gateway_registers_as_consul_registers_a_mesh_gateway() -> None:
    body = registration("dc2", "10.245.0.2", "10.243.0.3")
    assert body["Kind"] == "mesh-gateway"
    assert body["TaggedAddresses"] == {
        "lan": {"Address": "10.245.0.2", "Port": 8443},
        "wan": {"Address": "10.243.0.3", "Port": 8443},
    }
    assert (body["Address"], body["Port"]) == ("10.245.0.2", 8443)
    assert body["Proxy"]["Config"] == {  # Envoy on both sides, nothing else
        "envoy_gateway_no_default_bind": True, "envoy_gateway_bind_tagged_addresses": True,
    }  # fmt: skip


def test_a_pod_made_again_on_an_address_gets_the_same_local_unicast_mac() -> None:
    assert pod_mac("10.245.0.3") == pod_mac("10.245.0.3") == "02:4c:0a:f5:00:03"
    assert pod_mac("10.245.0.3") != pod_mac("10.244.0.3")
    assert int(pod_mac("10.1.2.3").split(":")[0], 16) & 0b11 == 0b10  # local, unicast
