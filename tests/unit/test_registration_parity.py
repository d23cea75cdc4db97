"""Registration rules Consul has and Loom follows: reserved ``consul-`` meta keys on agent
registrations, a port for every connect-proxy, and no two upstreams on one local address."""

from __future__ import annotations

from typing import Any

import pytest

from loom.domain.fields import ValidationError
from loom.domain.services import agent_registration, catalog_registration

PROXY: dict[str, Any] = {"Name": "web-proxy", "Kind": "connect-proxy", "Port": 21000,
                         "Proxy": {"DestinationServiceName": "web"}}  # fmt: skip


def _agent(body: dict[str, Any]) -> Any:
    return agent_registration(body, "node-1", "dc1", set(), lambda sid: 0)


@pytest.mark.parametrize(
    "body, where",
    [
        ({"Name": "web", "Port": 80, "Meta": {"consul-version": "1"}}, "Meta"),
        ({"Name": "web", "Port": 80, "Connect": {"SidecarService": {"Meta": {"consul-x": "y"}}}},
         "Connect.SidecarService.Meta"),
    ],
)  # fmt: skip
def test_an_agent_registration_may_not_use_the_reserved_meta_prefix(body: Any, where: str) -> None:
    with pytest.raises(ValidationError, match=f"^{where}: Key prefix 'consul-' is reserved"):
        _agent(body)


def test_meta_keys_that_only_contain_consul_are_accepted() -> None:
    reg = _agent({"Name": "web", "Port": 80, "Meta": {"x-consul-y": "1", "consul": "2"}})
    assert reg.instances[0].meta == {"x-consul-y": "1", "consul": "2"}


def test_a_connect_proxy_needs_a_port_in_agent_and_catalog_registrations() -> None:
    no_port = {k: v for k, v in PROXY.items() if k != "Port"}
    with pytest.raises(ValidationError, match="Port or SocketPath must be set for a connect-proxy"):
        _agent(no_port)
    with pytest.raises(ValidationError, match=r"Service\.Port: Port or SocketPath must be set"):
        catalog_registration({"Node": "n1", "Address": "10.0.0.1", "Service": no_port}, "dc1")
    assert _agent(PROXY).instances[0].port == 21000


def test_a_sidecar_without_a_port_still_gets_one_assigned() -> None:
    reg = _agent({"Name": "web", "Port": 80, "Connect": {"SidecarService": {}}})
    assert reg.instances[1].port >= 21000


def _upstreams(*ups: dict[str, Any]) -> dict[str, Any]:
    return {**PROXY, "Proxy": {**PROXY["Proxy"], "Upstreams": list(ups)}}


def test_two_upstreams_on_one_local_address_and_port_are_refused() -> None:
    body = _upstreams({"DestinationName": "a", "LocalBindPort": 9000},
                      {"DestinationName": "b", "LocalBindPort": 9000})  # fmt: skip
    with pytest.raises(ValidationError, match=r"\"127\.0\.0\.1:9000\" is specified twice"):
        _agent(body)
    explicit = _upstreams({"DestinationName": "a", "LocalBindPort": 9000},
                          {"DestinationName": "b", "LocalBindPort": 9000,
                           "LocalBindAddress": "127.0.0.1"})  # fmt: skip
    with pytest.raises(ValidationError, match="specified twice"):
        _agent(explicit)
    sidecar = {"Name": "web", "Port": 80, "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
        {"DestinationName": "a", "LocalBindPort": 9000},
        {"DestinationName": "b", "LocalBindPort": 9000}]}}}}  # fmt: skip
    with pytest.raises(ValidationError, match="specified twice"):
        _agent(sidecar)


def test_upstreams_on_other_addresses_or_centrally_configured_are_accepted() -> None:
    body = _upstreams({"DestinationName": "a", "LocalBindPort": 9000},
                      {"DestinationName": "b", "LocalBindPort": 9000, "LocalBindAddress": "127.0.0.2"},
                      {"DestinationName": "c", "CentrallyConfigured": True},
                      {"DestinationName": "d", "CentrallyConfigured": True})  # fmt: skip
    proxy = _agent(body).instances[0].proxy
    assert proxy is not None and [u.destination_name for u in proxy.upstreams] == list("abcd")
