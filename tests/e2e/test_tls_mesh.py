"""Real Envoy dataplanes on loopback that reach the server only over TLS: the API over
``https://`` verified with ``--ca-file``, xDS on ``--grpc-tls-addr`` through the bootstrap's
UpstreamTlsContext. Traffic flows through both sidecars and keeps flowing across a root
rotation (the sidecars swap to leaves of the new root); an Envoy told to trust another CA
refuses the server and gets no configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.leaks import hand_over
from tests.support.mesh import (
    Proc,
    curl,
    envoy_admin,
    free_port,
    start_dataplane,
    start_echo,
    wait_for,
)
from tests.support.pki import ScratchCA
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.envoy


class TlsMesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server: ServerProcess = start_server(
            "--https-addr", "127.0.0.1:0", "--grpc-tls-addr", "127.0.0.1:0"
        )
        self.procs: list[Proc] = []
        self.upstream = free_port()
        self.app = free_port()

    def register(self) -> None:
        s = self.server
        s.put("/v1/agent/service/register", {
            "Name": "static-server", "Port": self.app,
            "Connect": {"SidecarService": {"Port": free_port()}}})  # fmt: skip
        s.put("/v1/agent/service/register", {
            "Name": "static-client", "Port": free_port(),
            "Connect": {"SidecarService": {"Port": free_port(), "Proxy": {"Upstreams": [
                {"DestinationName": "static-server", "LocalBindPort": self.upstream}]}}}})  # fmt: skip

    def dataplane(self, proxy_id: str, *extra: str) -> Proc:
        s = self.server
        proc = start_dataplane(self.tmp, proxy_id, f"https://{s.https}",
                               f"https://{s.grpc_tls}", "--ca-file", s.ca_file, *extra)  # fmt: skip
        self.procs.append(proc)
        hand_over(proc.p.pid)
        return proc

    def url(self) -> str:
        return f"http://127.0.0.1:{self.upstream}/"

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.server.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMesh]:
    m = TlsMesh(tmp_path_factory.mktemp("tls-mesh"))
    try:
        echo = start_echo(m.tmp, "hello world", m.app, "a")
        m.procs.append(echo)
        hand_over(echo.p.pid)
        m.register()
        m.dataplane("static-server-sidecar-proxy")
        m.dataplane("static-client-sidecar-proxy", "--xds", "sotw")
        wait_for(lambda: curl(m.url())[1] == "hello world\n", 30, "hello world through the mesh")
        yield m
    finally:
        m.close()


def _leaf_serials(work: Path) -> set[int]:
    """Serial numbers of the SPIFFE leaves the sidecar's Envoy holds (admin ``/certs``)."""
    out = set()
    for entry in json.loads(envoy_admin(work, "/certs"))["certificates"]:
        for chain in entry.get("cert_chain", []):
            if any(n.get("uri", "").startswith("spiffe://") for n in chain["subject_alt_names"]):
                out.add(int(chain["serial_number"], 16))
    return out


def test_sidecars_configured_over_tls_xds_carry_traffic(mesh: TlsMesh) -> None:
    assert curl(mesh.url()) == (0, "hello world\n")
    for proc in mesh.procs:
        if proc.work is not None:
            bootstrap = (proc.work / "bootstrap.json").read_text()
            assert "UpstreamTlsContext" in bootstrap and mesh.server.ca_file in bootstrap


def test_traffic_keeps_flowing_across_a_root_rotation(mesh: TlsMesh, tmp_path: Path) -> None:
    works = {
        service: next(p.work for p in mesh.procs if p.work and f"dp-{service}-" in p.work.name)
        for service in ("static-server", "static-client")
    }
    before = {service: _leaf_serials(work) for service, work in works.items()}
    new = ScratchCA(tmp_path, "Rotated Root")
    config = {"PrivateKey": new.key_pem, "RootCert": new.cert_pem}
    mesh.server.put("/v1/connect/ca/configuration", {"Provider": "consul", "Config": config})
    for service, work in works.items():
        pem = mesh.server.get(f"/v1/agent/connect/ca/leaf/{service}")["CertPEM"]
        leaf = x509.load_pem_x509_certificate(pem.encode())
        assert leaf.issuer == new.cert.subject  # the server now issues from the new root
        # each agent makes its own key and has it signed when the roots change: a new leaf
        wait_for(lambda w=work, old=before[service]: bool(_leaf_serials(w) - old), 30,
                 f"{service}'s Envoy holding a leaf signed after the rotation")  # fmt: skip
    assert curl(mesh.url()) == (0, "hello world\n")


def test_an_envoy_trusting_another_ca_refuses_the_xds_server(mesh: TlsMesh, tmp_path: Path) -> None:
    other = ScratchCA(tmp_path, "Other CA")
    mesh.server.put("/v1/agent/service/register", {
        "Name": "lonely", "Port": free_port(), "Connect": {"SidecarService": {"Port": free_port()}}})  # fmt: skip
    proc = mesh.dataplane("lonely-sidecar-proxy", "--grpc-ca-file", str(other.file))
    assert proc.work is not None
    work = proc.work

    def verify_failures() -> int:
        stats = envoy_admin(work, "/stats?filter=cluster.loom_xds.ssl")
        for line in stats.splitlines():
            if line.startswith("cluster.loom_xds.ssl.fail_verify_error:"):
                return int(line.split(":")[1])
        return 0

    wait_for(lambda: (work / "admin-address").exists(), 30, "Envoy's admin address")
    wait_for(verify_failures, 30, "Envoy refusing the server's certificate")
    assert not (work / "ready").exists()  # no configuration: never ready
    assert "lonely" not in envoy_admin(work, "/config_dump?resource=dynamic_active_clusters")
