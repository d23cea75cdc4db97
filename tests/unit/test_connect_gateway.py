"""``loom connect envoy -gateway=mesh``'s registration body, address parsing, and what a
mesh gateway's dataplane does differently from a sidecar's (no SDS, only its own checks)."""

from __future__ import annotations

import pytest

from loom.addrs import Address
from loom.cli.connect_gateway import bindable, gateway_registration, split_address
from loom.cli.errors import UsageError
from loom.dataplane.bootstrap import build_bootstrap
from loom.dataplane.checks import owned
from loom.domain.services import agent_registration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5:8443", ("10.0.0.5", 8443)),
        (":8443", ("", 8443)),
        ("10.0.0.5", ("10.0.0.5", 0)),
        ("[::1]:443", ("::1", 443)),
        ("", ("", 0)),
    ],
)
def test_gateway_addresses_are_host_and_port_either_optional(
    text: str, expected: tuple[str, int]
) -> None:
    assert split_address(text, "--address") == expected


@pytest.mark.parametrize("text", ["10.0.0.5:http", "10.0.0.5:70000", "[::1", "[::1]x"])
def test_a_bad_gateway_address_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--address"):
        split_address(text, "--address")


def test_the_registration_is_consuls_and_the_server_accepts_it() -> None:
    body = gateway_registration(
        "mesh-gateway", "gw-1", ("127.0.0.1", 8443), ("127.0.0.2", 9443), "6h", True
    )
    assert body["Kind"] == "mesh-gateway" and body["ID"] == "gw-1"
    assert body["TaggedAddresses"] == {
        "lan": {"Address": "127.0.0.1", "Port": 8443},
        "wan": {"Address": "127.0.0.2", "Port": 9443},
    }
    assert body["Check"]["Name"] == "mesh-gateway listening"
    assert body["Check"]["TCP"] == "127.0.0.1:8443"
    assert body["Proxy"]["Config"]["envoy_gateway_bind_tagged_addresses"] is True
    (inst,) = agent_registration(body, "node-1", "dc1").instances
    assert inst.kind == "mesh-gateway" and inst.port == 8443
    assert inst.tagged_addresses["wan"].port == 9443


def test_without_a_host_the_gateway_takes_the_default_port_and_binds_by_default() -> None:
    body = gateway_registration("gw", "gw", ("", 0), None, "6h", False)
    assert body["Port"] == 8443 and body["TaggedAddresses"] == {}
    assert body["Check"]["TCP"] == "127.0.0.1:8443"
    assert "Proxy" not in body


def test_only_addresses_of_this_host_are_bindable() -> None:
    assert bindable("127.0.0.1")
    assert not bindable("192.0.2.1")  # TEST-NET-1: never configured here
    assert not bindable("gw.example.com")


def test_a_gateways_bootstrap_has_no_sds_cluster_and_a_sidecars_has() -> None:
    xds = Address("127.0.0.1", 8502)
    gateway = build_bootstrap("gw", "mesh-gateway", "default", xds, sds_socket=None)
    sidecar = build_bootstrap("web-proxy", "web", "default", xds, sds_socket="/tmp/s.sock")
    names = [c["name"] for c in gateway["static_resources"]["clusters"]]
    assert names == ["loom_xds"]
    assert "loom_agent_sds" in [c["name"] for c in sidecar["static_resources"]["clusters"]]
    assert gateway["node"]["cluster"] == "mesh-gateway"


def test_a_gateways_dataplane_runs_its_own_checks_never_the_nodes() -> None:
    def check(cid: str, service_id: str) -> dict[str, object]:
        return {
            "Node": "n", "CheckID": cid, "Name": cid, "Status": "critical",
            "ServiceID": service_id, "Definition": {"TCP": "127.0.0.1:1", "Interval": "10s"},
        }  # fmt: skip

    docs = {"gw": check("gw", "gw-1"), "node": check("node", ""), "web": check("web", "web")}
    assert [c.check_id for c in owned(docs, "gw-1", "", scripts=False)] == ["gw"]
    assert [c.check_id for c in owned(docs, "web-proxy", "web", scripts=False)] == ["web"]


def test_bind_addresses_replace_the_default_and_tagged_binds() -> None:
    body = gateway_registration(
        "gw", "gw", ("10.0.0.5", 8443), ("198.51.100.5", 443), "6h", True,
        {"public": ("10.0.0.9", 9443)},
    )  # fmt: skip
    assert body["Proxy"]["Config"] == {
        "envoy_gateway_no_default_bind": True,
        "envoy_gateway_bind_addresses": {"public": {"Address": "10.0.0.9", "Port": 9443}},
    }
    (inst,) = agent_registration(body, "node-1", "dc1").instances
    assert inst.proxy is not None and "envoy_gateway_bind_addresses" in inst.proxy.config
