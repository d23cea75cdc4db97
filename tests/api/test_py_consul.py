"""The real py-consul client (PyPI) against a real `loom server`: Consul clients work."""

from __future__ import annotations

import consul


def _client(server) -> consul.Consul:  # type: ignore[no-untyped-def]
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


def test_py_consul_registers_a_service_with_a_sidecar_and_reads_it_back(loom_server) -> None:
    c = _client(loom_server)
    assert c.agent.service.register(
        "static-server", port=8080, tags=["v1"],
        connect={"SidecarService": {"Proxy": {"Upstreams": []}}},
    )  # fmt: skip
    services = c.agent.services()
    assert services["static-server"]["Tags"] == ["v1"]
    assert services["static-server-sidecar-proxy"]["Kind"] == "connect-proxy"
    index, nodes = c.catalog.service("static-server")
    assert nodes[0]["ServicePort"] == 8080 and int(index) > 0
    _, entries = c.health.service("static-server")
    assert entries[0]["Service"]["ID"] == "static-server"
    assert c.agent.service.deregister("static-server")
    assert "static-server" not in c.agent.services()


def test_py_consul_manages_an_intention(loom_server) -> None:
    c = _client(loom_server)
    assert c.connect.intentions.upsert("web", "db", action="deny", description="no")
    got = c.connect.intentions.read("web", "db")
    assert got["Action"] == "deny" and got["Description"] == "no"
    assert c.connect.intentions.check("web", "db") is False
    assert [i["SourceName"] for i in c.connect.intentions.list()] == ["web"]
    assert c.connect.intentions.delete("web", "db")
    assert c.connect.intentions.check("web", "db") is True


def test_py_consul_reads_the_ca_roots(loom_server) -> None:
    roots = _client(loom_server).connect.ca.roots()
    assert roots["Roots"][0]["RootCert"].startswith("-----BEGIN CERTIFICATE-----")
