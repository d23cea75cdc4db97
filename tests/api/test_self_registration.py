"""The server registers itself as Consul's servers do: its node and the ``consul`` service
(port 8300) are in the catalog, and stay out of what is the mesh's (VIPs, xDS, the DNS table)
and of the agent's own services. Against a real server, through py-consul where it has the
call, and on the mesh snapshot the xDS server and DNS table are built from."""

from __future__ import annotations

from pathlib import Path

import consul

from loom.control.state import ServerSettings, State
from tests.support.server import start_server


def _client(server) -> consul.Consul:  # type: ignore[no-untyped-def]
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


def test_the_catalog_lists_the_server_node_and_its_consul_service(loom_server) -> None:  # type: ignore[no-untyped-def]
    c = _client(loom_server)
    _, services = c.catalog.services()
    assert services == {"consul": []}
    _, nodes = c.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["loom-server"]
    _, found = c.catalog.service("consul")
    assert [(s["Node"], s["ServiceID"], s["ServicePort"], s["Address"]) for s in found] == [
        ("loom-server", "consul", 8300, "127.0.0.1")
    ]
    assert found[0]["ServiceTaggedAddresses"] == {}  # no virtual IP
    _, healthy = c.health.service("consul", passing=True)
    assert [e["Service"]["ID"] for e in healthy] == ["consul"]


def test_the_consul_service_is_no_agent_service(loom_server) -> None:  # type: ignore[no-untyped-def]
    c = _client(loom_server)
    assert c.agent.services() == {}
    assert loom_server.request("GET", "/v1/agent/service/consul")[0] == 404
    assert loom_server.request("PUT", "/v1/agent/service/deregister/consul", b"")[0] == 404
    assert [s["ServiceID"] for s in c.catalog.service("consul")[1]] == ["consul"]


def test_the_consul_service_has_no_dns_table_entry(loom_server) -> None:  # type: ignore[no-untyped-def]
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 80})
    table = loom_server.get("/v1/loom/dns-table")
    assert [s["Name"] for s in table["Services"]] == ["web"]


def test_a_restart_finds_itself_registered_and_writes_nothing(tmp_path: Path) -> None:
    first = start_server(data_dir=tmp_path)
    try:
        index = int(first.request("GET", "/v1/catalog/services")[2]["X-Consul-Index"])
    finally:
        first.stop()
    again = start_server(data_dir=tmp_path)
    try:
        _, services, headers = again.request("GET", "/v1/catalog/services")
        assert services == {"consul": []} and int(headers["X-Consul-Index"]) == index
    finally:
        again.stop()


async def test_the_mesh_snapshot_leaves_the_consul_service_out() -> None:
    state = State(ServerSettings())
    await state.start()
    await state.register_self()
    try:
        await state.catalog.agent_register({"Name": "web", "Port": 80})
        assert [i.id for i in state.catalog.instances()] == ["consul", "web"]
        snap = state.snapshot()
        assert set(snap.services) == {("default", "web")}
        assert set(snap.endpoints) == {("default", "web")}
        assert state.catalog.vip_of("default", "consul") is None
    finally:
        await state.close()


def test_a_restored_snapshot_without_the_server_gets_it_registered_again(loom_server) -> None:  # type: ignore[no-untyped-def]
    from loom.store.archive import read_archive, write_archive

    status, blob, _ = _raw_get(loom_server, "/v1/snapshot")
    assert status == 200
    archive = read_archive(blob)
    tables = {name: dict(docs) for name, docs in archive.tables.items()}
    assert "loom-server/default/consul" in tables["services"]
    del tables["services"]["loom-server/default/consul"]
    packed = write_archive(archive.index, tables)  # a valid archive without the consul service
    status, text, headers = loom_server.request("PUT", "/v1/snapshot", packed)
    assert status == 200, text
    assert "consul" in loom_server.get("/v1/catalog/services")
    _, _, after = loom_server.request("GET", "/v1/catalog/services")
    assert int(headers["X-Consul-Index"]) == int(after["X-Consul-Index"])


def _raw_get(server, path: str) -> tuple[int, bytes, dict[str, str]]:  # type: ignore[no-untyped-def]
    import urllib.request

    with urllib.request.urlopen(f"http://{server.http}{path}", timeout=30) as resp:
        return resp.status, resp.read(), dict(resp.headers)
