"""A FederationState reads back exactly what it was written as, and nothing a peer could send
beyond that shape is accepted."""

from __future__ import annotations

from typing import Any

import pytest

from loom.domain.federation import (
    MAX_SERVERS,
    FederationState,
    RemoteService,
    state_from_json,
    state_to_json,
)
from loom.domain.fields import ValidationError
from loom.domain.mesh import Endpoint

STATE = FederationState(
    datacenter="dc2",
    servers=("10.0.0.1:8500", "[fd00::1]:8500"),
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
