"""The seeds' ``prepared_query:NAME:PORT`` upstream with real Envoy on loopback: the client's
sidecar dials only the instances the query keeps (by tag), and follows an update of the
query to the other instance without restarting anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.leaks import hand_over
from tests.support.mesh import Proc, curl, free_port, start_dataplane, start_echo, wait_for
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.envoy


class QueryMesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server: ServerProcess = start_server()
        self.procs: list[Proc] = []
        self.upstream_port = free_port()
        self.query_id = ""

    def own(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        hand_over(proc.p.pid)
        return proc

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.server.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueryMesh]:
    m = QueryMesh(tmp_path_factory.mktemp("query-mesh"))
    try:
        s = m.server
        status, out, _ = s.request("POST", "/v1/query", {
            "Name": "db-pick", "Service": {"Service": "db", "Tags": ["primary"]}})  # fmt: skip
        assert status == 200, out
        m.query_id = out["ID"]
        for sid, text, tag in (("db-a", "primary answer", "primary"),
                               ("db-b", "replica answer", "replica")):  # fmt: skip
            app, side = free_port(), free_port()
            m.own(start_echo(m.tmp, text, app, sid))
            s.put("/v1/agent/service/register", {
                "Name": "db", "ID": sid, "Port": app, "Tags": [tag],
                "Connect": {"SidecarService": {"Port": side}}})  # fmt: skip
            m.own(start_dataplane(m.tmp, f"{sid}-sidecar-proxy", s.http, s.grpc))
        upstream = {"DestinationType": "prepared_query", "DestinationName": "db-pick",
                    "LocalBindPort": m.upstream_port}  # fmt: skip
        s.put("/v1/agent/service/register", {
            "Name": "client", "Port": free_port(),
            "Connect": {"SidecarService": {"Port": free_port(),
                                           "Proxy": {"Upstreams": [upstream]}}}})  # fmt: skip
        m.own(start_dataplane(m.tmp, "client-sidecar-proxy", s.http, s.grpc))
        yield m
    finally:
        m.close()


def _answers(mesh: QueryMesh, n: int = 10) -> set[str]:
    url = f"http://127.0.0.1:{mesh.upstream_port}/"
    return {out.strip() for rc, out in (curl(url) for _ in range(n)) if rc == 0}


def test_the_upstream_reaches_only_what_the_query_keeps(mesh: QueryMesh) -> None:
    wait_for(lambda: _answers(mesh, 1) == {"primary answer"}, 60, "the primary via the query")
    assert _answers(mesh) == {"primary answer"}


def test_an_update_of_the_query_moves_the_upstream(mesh: QueryMesh) -> None:
    wait_for(lambda: _answers(mesh, 1) == {"primary answer"}, 60, "the primary via the query")
    status, out, _ = mesh.server.request("PUT", f"/v1/query/{mesh.query_id}", {
        "Name": "db-pick", "Service": {"Service": "db", "Tags": ["replica"]}})  # fmt: skip
    assert status == 200, out
    wait_for(lambda: _answers(mesh, 3) == {"replica answer"}, 30, "the replica after the update")
    assert _answers(mesh) == {"replica answer"}
