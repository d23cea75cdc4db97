"""``Kind: mesh-gateway`` registrations, by Consul's rules (``NodeService.Validate`` for
gateways): a port, no sidecar, a Proxy block of ``Config`` only, and
``lan``/``wan`` tagged addresses with an address and a port."""

from __future__ import annotations

from typing import Any

import pytest

from loom.domain.fields import ValidationError
from loom.domain.services import agent_registration, catalog_registration

GATEWAY: dict[str, Any] = {"Kind": "mesh-gateway", "Name": "mesh-gateway", "Port": 8443}


def register(**extra: Any) -> Any:
    return agent_registration({**GATEWAY, **extra}, "node-1", "dc1")


def test_a_gateway_is_stored_with_its_kind_and_an_empty_proxy_block() -> None:
    (inst,) = register(Proxy={"Config": {"connect_timeout_ms": 250}}).instances
    assert inst.kind == "mesh-gateway" and not inst.is_proxy and inst.is_mesh_gateway
    assert inst.proxy is not None and inst.proxy.config == {"connect_timeout_ms": 250}
    assert inst.proxy.destination_service_name == "" and inst.proxy.upstreams == ()
    (plain,) = register().instances
    assert plain.proxy is not None  # Consul shows a Proxy block for every gateway


def test_the_catalog_endpoint_applies_the_same_rules() -> None:
    _, reg = catalog_registration({"Node": "n", "Address": "10.0.0.1", "Service": GATEWAY}, "dc1")
    assert reg.instances[0].is_mesh_gateway
    with pytest.raises(ValidationError, match="Port must be non-zero for a mesh-gateway"):
        catalog_registration(
            {"Node": "n", "Address": "10.0.0.1", "Service": {**GATEWAY, "Port": 0}}, "dc1"
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"Port": 0}, "Port must be non-zero for a mesh-gateway"),
        ({"Connect": {"SidecarService": {}}}, "A mesh-gateway cannot have a sidecar service"),
        ({"Proxy": {"DestinationServiceName": "web"}},
         "The Proxy.DestinationServiceName configuration is invalid for a mesh-gateway"),
        ({"Proxy": {"DestinationServiceID": "web"}},
         "The Proxy.DestinationServiceID configuration is invalid for a mesh-gateway"),
        ({"Proxy": {"LocalServiceAddress": "127.0.0.1"}},
         "The Proxy.LocalServiceAddress configuration is invalid for a mesh-gateway"),
        ({"Proxy": {"LocalServicePort": 8080}},
         "The Proxy.LocalServicePort configuration is invalid for a mesh-gateway"),
        ({"Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": 1}]}},
         "The Proxy.Upstreams configuration is invalid for a mesh-gateway"),
        ({"TaggedAddresses": {"wan": {"Address": "198.51.100.1"}}}, "TaggedAddresses.wan.Port"),
        ({"TaggedAddresses": {"lan": {"Port": 8443}}}, "TaggedAddresses.lan.Address"),
        ({"TaggedAddresses": {"wan": {"Address": "not an address", "Port": 1}}},
         "TaggedAddresses.wan.Address"),
    ],
)  # fmt: skip
def test_what_consul_refuses_for_a_gateway_is_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
        register(**extra)


def test_a_connect_proxy_keeps_its_own_rules() -> None:
    with pytest.raises(ValidationError, match="DestinationServiceName"):
        agent_registration(
            {"Kind": "connect-proxy", "Name": "p", "Port": 21000, "Proxy": {}}, "n", "dc1"
        )
    with pytest.raises(ValidationError, match="only a connect-proxy or a mesh-gateway"):
        agent_registration({"Name": "web", "Port": 80, "Proxy": {"Config": {}}}, "n", "dc1")


def test_named_bind_addresses_are_checked_when_the_gateway_registers() -> None:
    good = {"envoy_gateway_bind_addresses": {"public": {"Address": "10.0.0.5", "Port": 443}}}
    (inst,) = register(Proxy={"Config": good}).instances
    assert inst.proxy is not None and inst.proxy.config == good
    for bad, message in (
        ({"envoy_gateway_bind_addresses": ["10.0.0.5:443"]}, "expected an object"),
        ({"envoy_gateway_bind_addresses": {"a b": {"Address": "10.0.0.5", "Port": 1}}},
         "a name of letters"),
        ({"envoy_gateway_bind_addresses": {"x": {"Address": "gw.example.com", "Port": 1}}},
         "is not an IP address"),
        ({"envoy_mesh_gateway_bind_addresses": {"x": {"Address": "10.0.0.5"}}}, "Port: is required"),
    ):  # fmt: skip
        with pytest.raises(ValidationError, match=message):
            register(Proxy={"Config": bad})
