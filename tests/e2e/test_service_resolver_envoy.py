"""``service-resolver`` with real Envoy sidecars on loopback, inside one datacenter: a
redirect sends an upstream to another service, a subset by ``Service.Meta.version == v2``
keeps only that instance, and failover moves an upstream to another service when every
primary instance goes critical and back when it passes again (an aggregate cluster; no
restart, no config change in between). Writes that loop or name a missing subset are 400
and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.leaks import hand_over
from tests.support.mesh import Proc, curl, free_port, start_dataplane, start_echo, wait_for
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.envoy


class ResolverMesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server: ServerProcess = start_server()
        self.procs: list[Proc] = []
        self.ports = {name: free_port() for name in ("web", "old", "pay")}

    def own(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        hand_over(proc.p.pid)
        return proc

    def instance(self, name: str, sid: str, text: str, **extra: Any) -> None:
        app, side = free_port(), free_port()
        self.own(start_echo(self.tmp, text, app, sid))
        self.server.put("/v1/agent/service/register", {
            "Name": name, "ID": sid, "Port": app,
            "Connect": {"SidecarService": {"Port": side}}, **extra})  # fmt: skip
        self.own(start_dataplane(self.tmp, f"{sid}-sidecar-proxy", self.server.http,
                                 self.server.grpc))  # fmt: skip

    def write(self, entry: dict[str, Any]) -> tuple[int, Any]:
        status, out, _ = self.server.request("PUT", "/v1/config", entry)
        return status, out

    def answers(self, upstream: str, n: int = 6) -> set[str]:
        url = f"http://127.0.0.1:{self.ports[upstream]}/"
        return {out.strip() for rc, out in (curl(url) for _ in range(n)) if rc == 0}

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.server.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResolverMesh]:
    m = ResolverMesh(tmp_path_factory.mktemp("resolver-mesh"))
    try:
        m.instance("web", "web-1", "web v1", Meta={"version": "v1"})
        m.instance("web", "web-2", "web v2", Meta={"version": "v2"})
        m.instance("api", "api-1", "api answer")
        m.instance("pay", "pay-1", "pay primary",
                   Check={"CheckID": "pay-1-alive", "TTL": "600s", "Status": "passing"})  # fmt: skip
        m.instance("pay-backup", "pay-backup-1", "pay backup")
        upstreams = [{"DestinationName": name, "LocalBindPort": port}
                     for name, port in m.ports.items()]  # fmt: skip
        m.server.put("/v1/agent/service/register", {
            "Name": "client", "Port": free_port(),
            "Connect": {"SidecarService": {"Port": free_port(),
                                           "Proxy": {"Upstreams": upstreams}}}})  # fmt: skip
        m.own(start_dataplane(m.tmp, "client-sidecar-proxy", m.server.http, m.server.grpc))
        wait_for(lambda: m.answers("web", 10) == {"web v1", "web v2"}, 90, "both web instances")
        yield m
    finally:
        m.close()


def test_a_redirect_sends_the_upstream_to_another_service(mesh: ResolverMesh) -> None:
    assert mesh.answers("old", 2) == set()  # no service 'old': the listener goes nowhere
    status, out = mesh.write({"Kind": "service-resolver", "Name": "old",
                              "Redirect": {"Service": "api"}})  # fmt: skip
    assert status == 200, out
    wait_for(lambda: mesh.answers("old", 2) == {"api answer"}, 30, "the redirect to api")
    assert mesh.answers("old") == {"api answer"}


def test_a_subset_by_meta_version_keeps_only_that_instance(mesh: ResolverMesh) -> None:
    status, out = mesh.write({
        "Kind": "service-resolver", "Name": "web", "DefaultSubset": "v2",
        "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                    "v2": {"Filter": "Service.Meta.version == v2"}}})  # fmt: skip
    assert status == 200, out
    wait_for(lambda: mesh.answers("web", 10) == {"web v2"}, 30, "only the v2 subset")
    assert mesh.answers("web", 20) == {"web v2"}


def test_failover_moves_on_when_the_primary_is_critical_and_comes_back(mesh: ResolverMesh) -> None:
    status, out = mesh.write({"Kind": "service-resolver", "Name": "pay", "ConnectTimeout": "2s",
                              "Failover": {"*": {"Service": "pay-backup"}}})  # fmt: skip
    assert status == 200, out
    wait_for(lambda: mesh.answers("pay", 3) == {"pay primary"}, 30, "the primary")
    mesh.server.put("/v1/agent/check/fail/pay-1-alive")
    wait_for(lambda: mesh.answers("pay", 3) == {"pay backup"}, 30, "failover to pay-backup")
    assert mesh.answers("pay") == {"pay backup"}
    mesh.server.put("/v1/agent/check/pass/pay-1-alive")
    wait_for(lambda: mesh.answers("pay", 3) == {"pay primary"}, 30, "fail-back to the primary")
    assert mesh.answers("pay") == {"pay primary"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"Name": "loop", "Redirect": {"Service": "loop"}}, "circular resolver redirect"),
        ({"Name": "api", "Redirect": {"Service": "old"}}, "circular resolver redirect"),
        ({"Name": "web", "Subsets": {"v1": {"Filter": "Service.Meta.version ="}}},
         "Filter for subset 'v1' is not a valid expression"),
        ({"Name": "web", "DefaultSubset": "v3", "Subsets": {"v1": {}}},
         "DefaultSubset 'v3' is not a valid subset"),
        ({"Name": "other", "Redirect": {"Service": "web", "ServiceSubset": "v7"}},
         "does not have a subset named 'v7'"),
    ],
)
def test_a_hostile_resolver_is_a_400_and_nothing_is_written(
    mesh: ResolverMesh, entry: dict[str, Any], message: str
) -> None:
    # The same entry the redirect test writes (rewriting it is no change): api -> old loops.
    assert mesh.write({"Kind": "service-resolver", "Name": "old",
                       "Redirect": {"Service": "api"}})[0] == 200  # fmt: skip
    before = mesh.server.get("/v1/config/service-resolver")
    status, out, _ = mesh.server.request(
        "PUT", "/v1/config", {"Kind": "service-resolver", **entry}
    )
    assert status == 400
    assert message in str(out)
    assert mesh.server.get("/v1/config/service-resolver") == before
