"""A FederationState reads back exactly what it was written as, and nothing a peer could send
beyond that shape is accepted."""

from __future__ import annotations

from typing import Any

import pytest

from loom.domain.federation import (
    MAX_SERVERS,
    FederationState,
    RemoteService,
    check_server,
    is_tls_server,
    server_url,
    state_from_json,
    state_to_json,
)
from loom.domain.fields import ValidationError
from loom.domain.mesh import Endpoint

STATE = FederationState(
    datacenter="dc2",
    servers=("10.0.0.1:8500", "[fd00::1]:8500", "https://10.0.0.2:8501"),
    mesh_gateways=(Endpoint("198.51.100.7", 8443),),
    services=(
        RemoteService(
            "api", "default", True, ("10.0.1.1",), (8080,), (Endpoint("10.0.1.1", 21000),)
        ),
        RemoteService("db", "team-a", False, (), (5432,), ()),
    ),
    updated_at="2026-12-01T19:00:00Z",
)


def test_a_state_survives_its_json_form_unchanged() -> None:
    doc = state_to_json(STATE)
    assert doc["Datacenter"] == "dc2" and doc["MeshGateways"] == [
        {"Address": "198.51.100.7", "Port": 8443}
    ]
    assert state_from_json(doc) == STATE


def _with(**changes: Any) -> dict[str, Any]:
    return {**state_to_json(STATE), **changes}


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "expected an object"),
        (_with(Extra=1), "FederationState.Extra: unknown field"),
        (_with(Datacenter=""), "FederationState.Datacenter"),
        (_with(Datacenter="dc 2"), "not a valid name"),
        (_with(Servers=["10.0.0.1"]), "is not HOST:PORT"),
        (_with(Servers=["unix:/tmp/s"]), "FederationState.Servers[0]"),
        (_with(Servers=["10.0.0.1:99999"]), "is not HOST:PORT"),
        (_with(Servers=["https://10.0.0.1"]), "is not HOST:PORT or https://HOST:PORT"),
        (_with(Servers=["ftp://10.0.0.1:21"]), "Servers[0]"),
        (_with(Servers=["https://unix:/tmp/s"]), "Servers[0]"),
        (_with(Servers=["https://:8501"]), "has no host"),
        (_with(Servers=[f"10.0.0.{i}:1" for i in range(MAX_SERVERS + 1)]), "more than"),
        (_with(MeshGateways=[{"Address": "1.2.3.4"}]), "MeshGateways[0].Port: is required"),
        (_with(MeshGateways=[{"Address": "1.2.3.4", "Port": "x"}]), "expected an integer"),
        (_with(Services=[{"Name": "a", "Ports": [True]}]), "Services[0].Ports[0]"),
        (_with(Services=[{"Name": "a"}, {"Name": "a"}]), "listed twice"),
        (_with(Services=[{"Name": "a", "Addresses": ["not an address!"]}]), "Addresses[0]"),
        (_with(Services=[{"Name": "a", "Meshed": "yes"}]), "expected true or false"),
        (_with(Services={"Name": "a"}), "expected a list"),
    ],
)
def test_a_hostile_or_broken_state_is_refused_with_the_field_named(doc: Any, where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        state_from_json(doc)
    assert where in str(caught.value)


@pytest.mark.parametrize(
    ("given", "checked", "url"),
    [
        ("10.0.0.1:8500", "10.0.0.1:8500", "http://10.0.0.1:8500"),
        ("http://10.0.0.1:8500", "10.0.0.1:8500", "http://10.0.0.1:8500"),
        ("https://10.0.0.1:8501", "https://10.0.0.1:8501", "https://10.0.0.1:8501"),
        ("https://[fd00::1]:8501", "https://[fd00::1]:8501", "https://[fd00::1]:8501"),
        ("https://server.dc2.consul:8501", "https://server.dc2.consul:8501",
         "https://server.dc2.consul:8501"),
    ],
)  # fmt: skip
def test_a_server_address_keeps_https_and_drops_a_plain_http_scheme(
    given: str, checked: str, url: str
) -> None:
    assert check_server(given, "--join-wan") == checked
    assert server_url(checked) == url
    assert is_tls_server(checked) == url.startswith("https://")
