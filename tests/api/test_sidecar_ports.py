"""Sidecar ports on one node, against a real `loom server --dev` process.

Envoy binds listeners with SO_REUSEPORT, so two sidecars on one port would both start and
split connections between two identities: a second sidecar on a taken port is refused.
Auto-assigned ports come from 21000-21255 and skip every local service's port, as Consul's do.
"""

from __future__ import annotations

from typing import Any

REGISTER = "/v1/agent/service/register"


def with_sidecar(name: str, port: int, sidecar: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"Name": name, "Port": port, "Connect": {"SidecarService": sidecar or {}}}


def sidecar_port(server: Any, service: str) -> int:
    port: int = server.get(f"/v1/agent/service/{service}-sidecar-proxy")["Port"]
    return port


def test_a_sidecar_on_a_port_another_sidecar_holds_is_refused_naming_both(loom_server) -> None:
    loom_server.put(REGISTER, with_sidecar("web", 8080, {"Port": 21500}))
    index_before = loom_server.request("GET", "/v1/agent/services")[2]["X-Consul-Index"]

    status, text, _ = loom_server.request(
        "PUT", REGISTER, with_sidecar("api", 9090, {"Port": 21500})
    )

    assert status == 400
    assert "21500" in text and "'web-sidecar-proxy'" in text and "'web'" in text
    assert set(loom_server.get("/v1/agent/services")) == {"web", "web-sidecar-proxy"}
    index_after = loom_server.request("GET", "/v1/agent/services")[2]["X-Consul-Index"]
    assert index_after == index_before


def test_a_standalone_proxy_on_a_taken_sidecar_port_is_refused(loom_server) -> None:
    loom_server.put(REGISTER, with_sidecar("web", 8080))
    taken = sidecar_port(loom_server, "web")
    proxy = {
        "Name": "api-proxy",
        "Kind": "connect-proxy",
        "Port": taken,
        "Proxy": {"DestinationServiceName": "api", "LocalServicePort": 9090},
    }

    status, text, _ = loom_server.request("PUT", REGISTER, proxy)

    assert status == 400 and f"sidecar port {taken}" in text
    assert "api-proxy" not in loom_server.get("/v1/agent/services")


def test_re_registering_a_service_keeps_its_sidecar_port_without_a_collision(loom_server) -> None:
    loom_server.put(REGISTER, with_sidecar("web", 8080, {"Port": 21500}))
    loom_server.put(REGISTER, {**with_sidecar("web", 8080, {"Port": 21500}), "Tags": ["v2"]})
    assert sidecar_port(loom_server, "web") == 21500

    loom_server.put(REGISTER, with_sidecar("a", 1))
    loom_server.put(REGISTER, with_sidecar("b", 2))
    assert (sidecar_port(loom_server, "a"), sidecar_port(loom_server, "b")) == (21000, 21001)
    loom_server.put("/v1/agent/service/deregister/a")
    loom_server.put(REGISTER, {**with_sidecar("b", 2), "Tags": ["v2"]})
    assert sidecar_port(loom_server, "b") == 21001  # kept, although 21000 is free again


def test_auto_assigned_ports_skip_every_local_services_port(loom_server) -> None:
    loom_server.put(REGISTER, {"Name": "plain", "Port": 21000})
    loom_server.put(REGISTER, with_sidecar("self", 21001))
    loom_server.put(REGISTER, with_sidecar("web", 8080))

    assert sidecar_port(loom_server, "self") == 21002
    assert sidecar_port(loom_server, "web") == 21003


def test_a_freed_sidecar_port_can_be_taken_and_other_nodes_do_not_collide(loom_server) -> None:
    loom_server.put(REGISTER, with_sidecar("web", 8080, {"Port": 21500}))
    loom_server.put(
        "/v1/catalog/register",
        {
            "Node": "other-node",
            "Address": "10.0.0.9",
            "Service": {
                "ID": "api-sidecar-proxy",
                "Service": "api-sidecar-proxy",
                "Kind": "connect-proxy",
                "Port": 21500,
                "Proxy": {"DestinationServiceName": "api", "LocalServicePort": 9090},
            },
        },
    )
    loom_server.put("/v1/agent/service/deregister/web")

    loom_server.put(REGISTER, with_sidecar("api", 9090, {"Port": 21500}))

    assert sidecar_port(loom_server, "api") == 21500


def test_sidecars_with_different_addresses_on_one_node_may_share_a_port(loom_server) -> None:
    # Pods (loom local, Kubernetes) are registered on one node, each with its own address and
    # network namespace, and every pod's first sidecar listens on 20000.
    for name, ip in (("web", "10.0.0.2"), ("api", "10.0.0.3")):
        loom_server.put(REGISTER, {**with_sidecar(name, 8080, {"Port": 20000}), "Address": ip})
    assert sidecar_port(loom_server, "web") == sidecar_port(loom_server, "api") == 20000

    status, text, _ = loom_server.request(
        "PUT", REGISTER, {**with_sidecar("db", 5432, {"Port": 20000}), "Address": "10.0.0.3"}
    )
    assert status == 400
    assert "sidecar port 20000 on node 'loom-server' address 10.0.0.3" in text
    assert "'api-sidecar-proxy'" in text
