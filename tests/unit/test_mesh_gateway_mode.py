"""``MeshGateway.Mode`` where Consul takes it: a registration's ``Proxy``, each upstream,
``service-defaults`` and ``proxy-defaults``; strict (a mode Consul does not know is refused,
naming the field), stored and shown only when set (older documents stay byte for byte)."""

from __future__ import annotations

from typing import Any

import pytest

from loom.domain.config_entries import validate_entry
from loom.domain.entries import ProxyDefaults, ServiceDefaults
from loom.domain.fields import ValidationError
from loom.domain.services import agent_registration
from loom.server import views
from loom.store import entry_codec, tables


def _sidecar(proxy: dict[str, Any]) -> Any:
    reg = agent_registration(
        {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": 21000, "Proxy": proxy}}},
        "node-1",
        "dc1",
    )
    [side] = [i for i in reg.instances if i.proxy is not None]
    return side


def test_a_registration_and_its_upstreams_keep_their_modes() -> None:
    side = _sidecar({
        "MeshGateway": {"Mode": "local"},
        "Upstreams": [
            {"DestinationName": "db", "LocalBindPort": 9191, "Datacenter": "dc2",
             "MeshGateway": {"Mode": "remote"}},
            {"DestinationName": "api", "LocalBindPort": 9192},
        ],
    })  # fmt: skip
    assert side.proxy.mesh_gateway == "local"
    assert [u.mesh_gateway for u in side.proxy.upstreams] == ["remote", ""]
    stored = tables.encode("services", side)
    assert stored["Proxy"]["MeshGateway"] == {"Mode": "local"}
    assert stored["Proxy"]["Upstreams"][0]["MeshGateway"] == {"Mode": "remote"}
    assert "MeshGateway" not in stored["Proxy"]["Upstreams"][1]
    assert tables.decode("services", stored) == side
    shown = views.proxy(side.proxy)
    assert shown["MeshGateway"] == {"Mode": "local"}
    assert shown["Upstreams"][0]["MeshGateway"] == {"Mode": "remote"}


def test_without_a_mode_nothing_new_is_stored_or_shown() -> None:
    side = _sidecar({"Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]})
    assert "MeshGateway" not in tables.encode("services", side)["Proxy"]
    assert "MeshGateway" not in views.proxy(side.proxy)


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ({"MeshGateway": {"Mode": "nearby"}}, "MeshGateway.Mode: 'nearby' is not one of 'none', 'local', 'remote'"),
        ({"MeshGateway": {"Mod": "local"}}, "MeshGateway.Mod: unknown field"),
        ({"Upstreams": [{"DestinationName": "db", "LocalBindPort": 1, "MeshGateway": {"Mode": 1}}]},
         "Upstreams[0].MeshGateway.Mode: expected a string"),
    ],
)
def test_a_mode_consul_does_not_know_is_refused(proxy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        _sidecar(proxy)
    assert message in str(err.value)


def test_defaults_entries_take_a_mode_and_round_trip() -> None:
    sd = validate_entry({"Kind": "service-defaults", "Name": "web", "MeshGateway": {"Mode": "remote"}})
    pd = validate_entry({"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": "local"}})
    assert isinstance(sd, ServiceDefaults) and sd.mesh_gateway == "remote"
    assert isinstance(pd, ProxyDefaults) and pd.mesh_gateway == "local"
    for e in (sd, pd):
        assert entry_codec.decode(entry_codec.encode(e)) == e
        assert views.config_entry(e)["MeshGateway"]["Mode"] == e.mesh_gateway
    plain = validate_entry({"Kind": "service-defaults", "Name": "web"})
    assert "MeshGateway" not in entry_codec.encode(plain)
    with pytest.raises(ValidationError, match=r"MeshGateway\.Mode: 'far'"):
        validate_entry({"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": "far"}})
