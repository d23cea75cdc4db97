"""An explicit upstream in another datacenter with real Envoy on loopback, through each
MeshGateway mode.

Two servers, dc1 and dc2, share one CA (dc2 starts from a copy of dc1's data directory, as
in ``test_mesh_gateway``); dc1 learns dc2's state (its gateway's WAN address and its api
service's sidecar) through a snapshot restore. A dc1 client sidecar has the upstream
``api`` in dc2; proxy-defaults' MeshGateway mode moves it, live, between dc2's sidecar
(``none``), dc1's gateway (``local``, then dc2's) and dc2's gateway (``remote``). Each time
the client's cluster has exactly the endpoints the mode picks and api answers, so TLS went
end to end with dc2's SPIFFE ID verified by the client; a deny intention written in dc2 then
stops dc1's caller at dc2's sidecar. Last, a service-resolver in dc1 fails the local api
over to dc2 when dc1's api instance is critical, and back when it passes.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.domain.federation import FederationState, RemoteService, state_to_json
from loom.domain.mesh import Endpoint
from loom.store.archive import read_archive, write_archive
from tests.e2e.test_mesh_gateway import TwoDcs
from tests.support.mesh import (
    Proc,
    curl,
    envoy_admin,
    free_port,
    loom_argv,
    start_dataplane,
    wait_for,
)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.envoy


def raw(server: ServerProcess, method: str, path: str, body: bytes | None = None) -> Any:
    """(status, body, headers) of one request, errors included."""
    req = urllib.request.Request(f"http://{server.http}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


class CrossDc(TwoDcs):
    api_sidecar = 0
    upstream = 0
    local_upstream = 0
    client: Proc
    gateway2: Proc
    api2: Proc

    def announce(self, api_sidecar: int) -> None:
        """dc2's state in dc1's store: its gateway and its api service's sidecar."""
        status, blob, _ = raw(self.dc1, "GET", "/v1/snapshot")
        assert status == 200
        archive = read_archive(blob)
        api = RemoteService("api", "default", True, ("127.0.0.1",), (0,),
                            (Endpoint("127.0.0.1", api_sidecar),))  # fmt: skip
        state = FederationState(
            "dc2", (self.dc2.http,), (Endpoint("127.0.0.1", self.gw2),), (api,),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )  # fmt: skip
        archive.tables.setdefault("federation_states", {})["dc2"] = state_to_json(state)
        status, body, _ = raw(
            self.dc1, "PUT", "/v1/snapshot", write_archive(archive.index, archive.tables)
        )
        assert status == 200, body

    def mode(self, mode: str) -> None:
        entry = {"Kind": "proxy-defaults", "Name": "global", "MeshGateway": {"Mode": mode}}
        status, out, _ = self.dc1.request("PUT", "/v1/config", entry)
        assert status == 200, out

    def cluster_ports(self) -> set[int]:
        """The endpoints of the client's cluster for api in dc2, as its Envoy has them."""
        name = self.sni("api", "dc2")
        assert self.client.work is not None
        lines = envoy_admin(self.client.work, "/clusters").splitlines()
        return {
            int(line.split("::")[1].rsplit(":", 1)[1])
            for line in lines
            if line.startswith(f"{name}::127.0.0.1:") and "::cx_total::" in line
        }

    def start_gateway2(self) -> Proc:
        """dc2's gateway (registered as ``gateway-dc2``) run by ``loom dataplane``."""
        return self.own(start_dataplane(self.tmp, "gateway-dc2", self.dc2.http, self.dc2.grpc,
                                        "--envoy-concurrency", "1"))  # fmt: skip

    def answer(self, port: int = 0) -> str:
        rc, out = curl(f"http://127.0.0.1:{port or self.upstream}/")
        return out.strip() if rc == 0 else ""


def build(tmp: Path) -> CrossDc:
    """The two datacenters with dc2's api, both gateways and dc1's client (also used by
    ``bench/xdc_latency.py`` and ``test_gateway_loss``); closed again if a step fails."""
    d = CrossDc(tmp)
    try:
        d.api2 = d.app(d.dc2, "api", "hello from dc2")
        d.app(d.dc1, "api", "hello from dc1")
        d.api_sidecar = d.dc2.get("/v1/agent/service/api-sidecar-proxy")["Port"]
        d.announce(d.api_sidecar)
        d.dc2.put("/v1/agent/service/register", {
            "Kind": "mesh-gateway", "Name": "mesh-gateway", "ID": "gateway-dc2",
            "Address": "127.0.0.1", "Port": d.gw2,
            "TaggedAddresses": {"wan": {"Address": "127.0.0.1", "Port": d.gw2}}})  # fmt: skip
        d.gateway2 = d.start_gateway2()
        d.own(Proc(loom_argv(
            "connect", "envoy", "-gateway=mesh", "-register", "-service", "mesh-gateway",
            "-address", f"127.0.0.1:{d.gw1}", "-http-addr", d.dc1.http,
            "-grpc-addr", d.dc1.grpc, "--work-dir", str(d.tmp / "gateway-dc1")),
            d.tmp / "gateway-dc1.log"))  # fmt: skip
        wait_for(lambda: (d.tmp / "gateway-dc1" / "ready").exists(), 60, "dc1's gateway ready")
        d.upstream = free_port()
        d.local_upstream = free_port()
        upstreams = [
            {"DestinationName": "api", "Datacenter": "dc2", "LocalBindPort": d.upstream},
            {"DestinationName": "api", "LocalBindPort": d.local_upstream},
        ]
        d.dc1.put("/v1/agent/service/register", {
            "Name": "client", "Port": free_port(),
            "Connect": {"SidecarService": {"Port": free_port(),
                                           "Proxy": {"Upstreams": upstreams}}}})  # fmt: skip
        d.client = d.own(start_dataplane(d.tmp, "client-sidecar-proxy", d.dc1.http, d.dc1.grpc,
                                         "--envoy-concurrency", "1"))  # fmt: skip
    except BaseException:
        d.close()
        raise
    return d


@pytest.fixture(scope="module")
def dcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrossDc]:
    d = build(tmp_path_factory.mktemp("cross-dc"))
    try:
        yield d
    finally:
        d.close()


@pytest.mark.parametrize("mode", ["none", "local", "remote"])
def test_each_mode_dials_what_it_names_and_reaches_dc2s_api(dcs: CrossDc, mode: str) -> None:
    dcs.mode(mode)
    want = {"none": dcs.api_sidecar, "local": dcs.gw1, "remote": dcs.gw2}[mode]
    wait_for(lambda: dcs.cluster_ports() == {want}, 60, f"the client's cluster in mode {mode}")
    wait_for(lambda: dcs.answer() == "hello from dc2", 60, f"api in dc2 in mode {mode}")


def test_through_dc1s_gateway_the_connection_passes_both_gateways(dcs: CrossDc) -> None:
    dcs.mode("local")
    wait_for(lambda: dcs.cluster_ports() == {dcs.gw1}, 60, "the client dialling dc1's gateway")

    def through_dc1_gateway() -> int:
        stats = envoy_admin(dcs.tmp / "gateway-dc1", "/stats?filter=cx_total")
        key = f"cluster.dc2.internal.{dcs.td}.upstream_cx_total: "
        line = next((s for s in stats.splitlines() if s.startswith(key)), key + "0")
        return int(line.removeprefix(key))

    before = through_dc1_gateway()
    wait_for(lambda: dcs.answer() == "hello from dc2", 60, "api through both gateways")
    assert through_dc1_gateway() > before


def test_dc2s_intentions_judge_the_dc1_caller(dcs: CrossDc) -> None:
    dcs.mode("remote")
    wait_for(lambda: dcs.answer() == "hello from dc2", 60, "api allowed by default")
    path = "/v1/connect/intentions/exact?source=client&destination=api"
    status, out, _ = dcs.dc2.request("PUT", path, {"Action": "deny"})
    assert status == 200, out
    try:
        wait_for(lambda: dcs.answer() == "", 30, "the deny written in dc2 enforced")
        assert dcs.answer() == ""
    finally:
        assert dcs.dc2.request("DELETE", path)[0] == 200
    wait_for(lambda: dcs.answer() == "hello from dc2", 30, "allowed again")


def test_failover_to_dc2_when_dc1s_instances_are_critical_and_back(dcs: CrossDc) -> None:
    dcs.mode("local")
    entry = {"Kind": "service-resolver", "Name": "api", "Failover": {"*": {"Datacenters": ["dc2"]}}}
    status, out, _ = dcs.dc1.request("PUT", "/v1/config", entry)
    assert status == 200, out
    port = dcs.local_upstream
    wait_for(lambda: dcs.answer(port) == "hello from dc1", 60, "dc1's own api first")
    dcs.dc1.put("/v1/agent/check/fail/service:api")
    wait_for(lambda: dcs.answer(port) == "hello from dc2", 60, "failover to dc2")
    assert {dcs.answer(port) for _ in range(5)} == {"hello from dc2"}
    dcs.dc1.put("/v1/agent/check/pass/service:api")
    wait_for(lambda: dcs.answer(port) == "hello from dc1", 60, "fail-back to dc1")
    assert {dcs.answer(port) for _ in range(5)} == {"hello from dc1"}
