from __future__ import annotations

import pytest

from loom.domain.fields import ValidationError
from loom.domain.services import agent_registration


def test_a_sidecar_service_is_expanded_the_way_consul_does() -> None:
    reg = agent_registration(
        {
            "Name": "static-client",
            "Port": 8080,
            "Connect": {
                "SidecarService": {
                    "Proxy": {
                        "Upstreams": [{"DestinationName": "static-server", "LocalBindPort": 1234}]
                    }
                }
            },
        },
        node="n1",
        datacenter="dc1",
    )
    app, sidecar = reg.instances
    assert app.id == "static-client" and app.kind == ""
    assert sidecar.id == "static-client-sidecar-proxy"
    assert sidecar.service == "static-client-sidecar-proxy"
    assert sidecar.kind == "connect-proxy"
    assert sidecar.port == 21000
    proxy = sidecar.proxy
    assert proxy is not None
    assert proxy.destination_service_name == "static-client"
    assert proxy.destination_service_id == "static-client"
    assert proxy.local_service_port == 8080
    assert proxy.upstreams[0].destination_name == "static-server"
    assert proxy.upstreams[0].local_bind_port == 1234
    assert proxy.upstreams[0].local_bind_address == "127.0.0.1"


def test_sidecar_ports_skip_ports_in_use() -> None:
    reg = agent_registration(
        {"Name": "a", "Port": 1, "Connect": {"SidecarService": {}}}, "n", "dc1", {21000, 21001}
    )
    assert reg.instances[1].port == 21002


def test_a_ttl_check_starts_critical_with_consuls_default_id() -> None:
    reg = agent_registration({"Name": "web", "Check": {"TTL": "10s"}}, "n", "dc1")
    assert reg.checks[0].check_id == "service:web"
    assert reg.checks[0].status == "critical"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Name": "web", "Port": "80"}, "Port: expected an integer"),
        ({"Name": "web", "Port": 70000}, "Port: 70000 is outside"),
        ({"Name": "we b"}, "Name: 'we b' is not a valid name"),
        ({"Name": "web", "Kind": "gateway"}, "Kind: 'gateway'"),
        ({"Name": "p", "Kind": "connect-proxy"}, "Proxy: is required"),
        ({"Name": "web", "Check": {"HTTP": "http://x"}}, "Check.Interval: Interval must be > 0"),
        ({"Name": "web", "Check": {"TTL": "ten"}}, "Check.TTL: 'ten' is not a duration"),
        ({"Name": "web", "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
            {"DestinationName": "db"}]}}}}, "LocalBindPort: is required"),
        ([], "expected an object"),
    ],
)  # fmt: skip
def test_bad_registrations_name_the_field(body, message) -> None:
    with pytest.raises(ValidationError) as err:
        agent_registration(body, "n", "dc1")
    assert message in str(err.value)
