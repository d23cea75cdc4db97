"""Mesh gateways on loopback with real Envoy: SNI routing that never terminates TLS.

Two servers, dc1 and dc2, sharing one CA (dc2 starts from a copy of dc1's data directory, so
both sign for one trust domain, as a federation does). Each datacenter has an HTTP echo app
behind a sidecar and a mesh gateway: dc1's is started by ``loom connect envoy -gateway=mesh
-register``, dc2's is registered through the API and run by ``loom dataplane --proxy-id``. dc2
joins dc1 over the WAN (``--join-wan``), so dc1 learns dc2's healthy gateway from the state
dc2 publishes. A raw TLS client with a dc1 leaf dials dc1's gateway:

- SNI ``web.default.dc1...``: the handshake completes with web's SIDECAR certificate (its
  SPIFFE ID checked), so the gateway passed the TLS through; the app answers;
- SNI ``api.default.dc2...``: through dc1's gateway to dc2's gateway to api's sidecar, whose
  dc2 SPIFFE ID the client sees;
- an unknown SNI (or none) is closed; a sidecar whose service turns critical drops out of the
  gateway's cluster and comes back.
"""

from __future__ import annotations

import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.leaks import hand_over
from tests.support.mesh import (
    Proc,
    envoy_admin,
    free_port,
    loom_argv,
    start_dataplane,
    start_echo,
    wait_for,
)
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.envoy


class TwoDcs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        first = start_server(data_dir=tmp / "dc1")
        first.stop()  # made its CA: dc2 starts from a copy of it (one trust domain)
        shutil.copytree(tmp / "dc1", tmp / "dc2")
        self.dc1: ServerProcess = start_server(data_dir=tmp / "dc1")
        self.dc2: ServerProcess = start_server(
            "--datacenter", "dc2", "--primary-datacenter", "dc1", "--join-wan", self.dc1.http,
            data_dir=tmp / "dc2",
        )  # fmt: skip
        roots = self.dc1.get("/v1/agent/connect/ca/roots")
        self.td = roots["TrustDomain"]
        self.roots = tmp / "roots.pem"
        self.roots.write_text("".join(r["RootCert"] for r in roots["Roots"]))
        leaf = self.dc1.get("/v1/agent/connect/ca/leaf/client")
        self.cert, self.key = tmp / "client.pem", tmp / "client-key.pem"
        self.cert.write_text(leaf["CertPEM"])
        self.key.write_text(leaf["PrivateKeyPEM"])
        self.gw1, self.gw2 = free_port(), free_port()

    def own(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        hand_over(proc.p.pid)
        return proc

    def app(self, server: ServerProcess, name: str, text: str) -> Proc:
        port, side = free_port(), free_port()
        self.own(start_echo(self.tmp, text, port, name))
        server.put("/v1/agent/service/register", {
            "Name": name, "Port": port, "Check": {"TTL": "600s"},
            "Connect": {"SidecarService": {"Port": side}}})  # fmt: skip
        server.put(f"/v1/agent/check/pass/service:{name}")
        return self.own(
            start_dataplane(self.tmp, f"{name}-sidecar-proxy", server.http, server.grpc,
                            "--envoy-concurrency", "1")
        )  # fmt: skip

    def dc2_gateway_known(self) -> bool:
        """dc1 knows dc2's gateway (healthy there, so in the state dc2 publishes)."""
        known = self.dc1.get("/v1/internal/federation-states/mesh-gateways")
        return {"Address": "127.0.0.1", "Port": self.gw2} in known.get("dc2", [])

    def sni(self, service: str, dc: str) -> str:
        return f"{service}.default.{dc}.internal.{self.td}"

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.dc1.stop()
        self.dc2.stop()


def call(dcs: TwoDcs, port: int, sni: str | None) -> tuple[str, str]:
    """A TLS connection through the gateway on ``port`` with this SNI: the peer's SPIFFE ID
    and the HTTP answer. Raises ``OSError`` (``ssl.SSLError``...) when it is closed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(dcs.roots))
    ctx.load_cert_chain(str(dcs.cert), str(dcs.key))
    with (
        socket.create_connection(("127.0.0.1", port), 5) as plain,
        ctx.wrap_socket(plain, server_hostname=sni) as tls,
    ):
        peer = tls.getpeercert() or {}
        uris = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
        tls.sendall(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    return uris[0] if uris else "", answer.decode(errors="replace")


def closed(dcs: TwoDcs, port: int, sni: str | None) -> bool:
    try:
        call(dcs, port, sni)
    except OSError:
        return True
    return False


@pytest.fixture(scope="module")
def dcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoDcs]:
    d = TwoDcs(tmp_path_factory.mktemp("gateways"))
    try:
        d.app(d.dc1, "web", "hello from dc1")
        d.app(d.dc2, "api", "hello from dc2")
        d.dc2.put("/v1/agent/service/register", {
            "Kind": "mesh-gateway", "Name": "mesh-gateway", "ID": "gateway-dc2",
            "Address": "127.0.0.1", "Port": d.gw2,
            "TaggedAddresses": {"wan": {"Address": "127.0.0.1", "Port": d.gw2}}})  # fmt: skip
        d.own(start_dataplane(d.tmp, "gateway-dc2", d.dc2.http, d.dc2.grpc,
                              "--envoy-concurrency", "1"))  # fmt: skip
        wait_for(d.dc2_gateway_known, 60, "dc2's gateway known in dc1")
        d.own(Proc(loom_argv(
            "connect", "envoy", "-gateway=mesh", "-register", "-service", "mesh-gateway",
            "-address", f"127.0.0.1:{d.gw1}", "-http-addr", d.dc1.http,
            "-grpc-addr", d.dc1.grpc, "--work-dir", str(d.tmp / "gateway-dc1")),
            d.tmp / "gateway-dc1.log"))  # fmt: skip
        wait_for(lambda: (d.tmp / "gateway-dc1" / "ready").exists(), 60, "dc1's gateway ready")
        wait_for(lambda: "hello from dc1" in call(d, d.gw1, d.sni("web", "dc1"))[1], 60,
                 "web through dc1's gateway")  # fmt: skip
        yield d
    finally:
        d.close()


def test_a_local_sni_reaches_the_sidecar_whose_certificate_the_client_sees(dcs: TwoDcs) -> None:
    spiffe, answer = call(dcs, dcs.gw1, dcs.sni("web", "dc1"))
    assert spiffe == f"spiffe://{dcs.td}/ns/default/dc/dc1/svc/web"
    assert answer.startswith("HTTP/1.1 200") and "hello from dc1" in answer


def test_another_dcs_sni_goes_through_both_gateways_to_its_sidecar(dcs: TwoDcs) -> None:
    target = dcs.sni("api", "dc2")
    wait_for(lambda: "hello from dc2" in call(dcs, dcs.gw1, target)[1], 60, "api via dc2")
    spiffe, answer = call(dcs, dcs.gw1, target)
    assert spiffe == f"spiffe://{dcs.td}/ns/default/dc/dc2/svc/api"
    assert "hello from dc2" in answer


@pytest.mark.parametrize("sni", [None, "nope.default.dc1.internal.", "api.default.dc9.internal."])
def test_an_unknown_server_name_is_closed(dcs: TwoDcs, sni: str | None) -> None:
    name = sni + dcs.td if sni else None
    assert closed(dcs, dcs.gw1, name)
    assert "hello from dc1" in call(dcs, dcs.gw1, dcs.sni("web", "dc1"))[1]  # still serving


def test_the_gateway_registered_itself_as_consul_does(dcs: TwoDcs) -> None:
    svc = dcs.dc1.get("/v1/agent/service/mesh-gateway")
    assert svc["Kind"] == "mesh-gateway"
    assert svc["TaggedAddresses"]["lan"] == {"Address": "127.0.0.1", "Port": dcs.gw1}
    checks = dcs.dc1.get("/v1/agent/checks")
    (listening,) = [c for c in checks.values() if c["ServiceID"] == "mesh-gateway"]
    assert listening["Name"] == "mesh-gateway listening"
    wait_for(
        lambda: dcs.dc1.get("/v1/agent/checks")[listening["CheckID"]]["Status"] == "passing",
        30,
        "the gateway's own check run by its dataplane",
    )


def test_a_sidecar_whose_service_turns_critical_drops_out_and_comes_back(dcs: TwoDcs) -> None:
    work = dcs.tmp / "gateway-dc1"
    cluster = dcs.sni("web", "dc1")

    def endpoints() -> int:
        lines = envoy_admin(work, "/clusters").splitlines()
        return sum(1 for line in lines if line.startswith(f"{cluster}::") and "::cx_total::" in line)

    assert endpoints() == 1
    dcs.dc1.put("/v1/agent/check/fail/service:web")
    wait_for(lambda: endpoints() == 0, 30, "web's sidecar out of the gateway's cluster")
    assert closed(dcs, dcs.gw1, cluster)
    dcs.dc1.put("/v1/agent/check/pass/service:web")
    wait_for(lambda: endpoints() == 1, 30, "web's sidecar back")
    wait_for(lambda: "hello from dc1" in call(dcs, dcs.gw1, cluster)[1], 30, "web again")


def test_proxy_config_and_status_show_the_gateway(dcs: TwoDcs) -> None:
    config = dcs.dc1.get("/v1/loom/proxies/mesh-gateway/config")
    assert config["Service"] == "mesh-gateway"
    (listener,) = config["Listeners"]
    assert listener["name"] == f"default:127.0.0.1:{dcs.gw1}"
    assert {c["name"] for c in config["Clusters"]} == {
        dcs.sni("web", "dc1"), f"dc2.internal.{dcs.td}"
    }
    statuses = dcs.dc1.get("/v1/loom/proxies")
    (mine,) = [s for s in statuses if s["ID"] == "mesh-gateway"]
    assert mine["Service"] == "mesh-gateway" and mine["Registered"]


def test_the_bootstrap_of_a_gateway_reads_no_secret(dcs: TwoDcs) -> None:
    import json
    import subprocess

    done = subprocess.run(
        loom_argv("connect", "envoy", "-gateway=mesh", "-proxy-id", "gateway-dc2", "-bootstrap",
                  "-http-addr", dcs.dc2.http, "-grpc-addr", dcs.dc2.grpc),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    boot = json.loads(done.stdout)
    assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["loom_xds"]
    assert boot["node"] == {
        "id": "gateway-dc2", "cluster": "mesh-gateway",
        "metadata": {"namespace": "default", "proxy_id": "gateway-dc2"},
    }  # fmt: skip


def test_ctrl_c_stops_a_registered_gateway_and_keeps_its_registration(dcs: TwoDcs) -> None:
    """Consul's ``-register`` keeps the service when the gateway exits (its check's
    deregistration timer is what removes a gateway that does not come back)."""
    import signal

    port, work = free_port(), dcs.tmp / "gateway-temp"
    proc = dcs.own(Proc(loom_argv(
        "connect", "envoy", "-gateway=mesh", "-register", "-service", "gateway-temp",
        "-address", f"127.0.0.1:{port}", "-http-addr", dcs.dc2.http, "-grpc-addr", dcs.dc2.grpc,
        "--work-dir", str(work)), dcs.tmp / "gateway-temp.log"))  # fmt: skip
    wait_for(lambda: (work / "ready").exists(), 60, "the second gateway ready")
    assert "Registered service: gateway-temp" in proc.output()
    assert proc.stop(signal.SIGINT) == 0
    assert dcs.dc2.get("/v1/agent/service/gateway-temp")["Kind"] == "mesh-gateway"


def test_a_gateways_checks_run_without_envoy_for_an_envoy_run_by_hand(dcs: TwoDcs) -> None:
    """``loom dataplane --no-envoy`` of a gateway serves no secret (it has none) and runs its
    checks (here a TCP check of a port nobody listens on)."""
    dcs.dc2.put("/v1/agent/service/register", {
        "Kind": "mesh-gateway", "Name": "gateway-hand", "Port": free_port(),
        "Address": "127.0.0.1", "Check": {"Name": "mesh-gateway listening",
                                          "TCP": "127.0.0.1:1", "Interval": "1s"}})  # fmt: skip
    agent = dcs.own(start_dataplane(dcs.tmp, "gateway-hand", dcs.dc2.http, dcs.dc2.grpc,
                                    "--no-envoy"))  # fmt: skip

    def output() -> str:
        checks = dcs.dc2.get("/v1/agent/checks")
        return str(next(c["Output"] for c in checks.values() if c["ServiceID"] == "gateway-hand"))

    wait_for(lambda: "dial tcp 127.0.0.1:1" in output(), 30, "the gateway's check run")
    assert "running the checks of mesh gateway gateway-hand" in agent.output()
    assert not list((dcs.tmp).glob("dp-gateway-hand-*/sds.sock"))
