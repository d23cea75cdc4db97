"""A pod reaches a service of another datacenter by its Kubernetes name: glibc, the redirected
DNS proxy, the transparent outbound listener and real Envoy, up to the mesh gateway (root).

``loom local`` runs dc1 (its server with a durable store, pods as network namespaces, real
iptables and Envoy). What dc1's server knows of dc2 is put in that store before it starts, as
its WAN poller would have written it (``federation_states``): a meshed ``api`` on port 9090.
dc1's server allocates ``api`` a local VIP (240.241.0.0/16) by itself. dc1's "mesh gateway" is
a plain pod that records the SNI of every TLS ClientHello it gets: with ``MeshGateway`` mode
``local``, the client's sidecar must open its mTLS connection to it for
``api.default.dc2.internal.<trust domain>``, which a real gateway routes to dc2 by name.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loom.domain.federation import FederationState, RemoteService
from loom.domain.mesh import Endpoint
from loom.local.mesh import LocalMesh, LocalSettings
from loom.local.netns import LocalNetSettings
from loom.local.workload import AppProcess
from loom.store import put
from loom.store.factory import open_store
from loom.store.tables import FEDERATION_STATES
from tests.support.mesh import free_port, wait_for

pytestmark = [pytest.mark.root, pytest.mark.envoy]

SNI_RECORDER = r"""
import socket, struct, sys
out = sys.argv[1]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8443))
srv.listen(16)
while True:
    conn, _ = srv.accept()
    conn.settimeout(5)
    data = b""
    try:
        while len(data) < 5 or len(data) < 5 + struct.unpack("!H", data[3:5])[0]:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    conn.close()
    try:  # record header, handshake header, version, random, session id, ciphers, compression
        at = 5 + 4 + 2 + 32
        at += 1 + data[at]
        at += 2 + struct.unpack("!H", data[at:at + 2])[0]
        at += 1 + data[at]
        end = at + 2 + struct.unpack("!H", data[at:at + 2])[0]
        at += 2
        name = ""
        while at + 4 <= end:
            kind, size = struct.unpack("!HH", data[at:at + 4])
            if kind == 0:  # server_name: list length, name type, name length, name
                length = struct.unpack("!H", data[at + 7:at + 9])[0]
                name = data[at + 9:at + 9 + length].decode()
            at += 4 + size
    except (IndexError, struct.error, UnicodeDecodeError):
        name = "?"
    with open(out, "a") as f:
        f.write(name + "\n")
"""


@dataclass
class Dc1:
    mesh: LocalMesh
    snis: Path


def dc2_state() -> FederationState:
    api = RemoteService("api", "default", True, ("10.2.0.1",), (9090,),
                        (Endpoint("10.2.0.1", 21000),))  # fmt: skip
    return FederationState("dc2", ("10.2.0.100:8500",), (Endpoint("198.51.100.2", 8443),),
                           (api,), "2026-12-01T19:00:00Z")  # fmt: skip


async def learn_dc2(data_dir: Path) -> None:
    store = open_store(data_dir)
    await store.open()
    try:
        await store.apply([put(FEDERATION_STATES, "dc2", dc2_state())])
    finally:
        await store.close()


@pytest.fixture(scope="module")
def dc1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dc1]:
    work = tmp_path_factory.mktemp("dc1")
    state = Path(f"/run/loom-test-xdc-{os.getpid()}")
    state.mkdir(mode=0o755)
    asyncio.run(learn_dc2(work / "data"))
    settings = LocalSettings(
        net=LocalNetSettings(
            prefix=f"lx{os.getpid() % 100000}", subnet="10.237.0.0/16", state_dir=state
        ),
        http_addr=f"127.0.0.1:{free_port()}",
        grpc_addr=f"127.0.0.1:{free_port()}",
        data_dir=work / "data",
        default_policy="allow",
    )
    m = LocalMesh(settings)
    snis = work / "snis.txt"
    snis.touch()
    try:
        m.up()
        m.run_pod("gateway", None, [AppProcess(None, (sys.executable, "-c", SNI_RECORDER,
                                                      str(snis)))])  # fmt: skip
        ip = m.record("gateway")["ip"]  # type: ignore[index]
        m.client().put("/v1/catalog/register", {
            "Node": "gateway-node", "Address": ip,
            "Service": {"Kind": "mesh-gateway", "Service": "mesh-gateway", "Port": 8443},
        })  # fmt: skip
        m.client().put(
            "/v1/config", {"Kind": "proxy-defaults", "Name": "global",
                           "MeshGateway": {"Mode": "local"}})  # fmt: skip
        m.run("client", [], {}, ["sleep", "3600"])
        yield Dc1(m, snis)
    finally:
        m.down(purge=True)
        assert not state.exists() or not any(state.iterdir())
        if state.exists():
            state.rmdir()


def exec_in(dc1: Dc1, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dc1.mesh.exec_argv("client", list(cmd)), capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def remote_vip(dc1: Dc1) -> str | None:
    table = dc1.mesh.client().get("/v1/loom/dns-table")
    found = [s["VirtualIPs"] for s in table["Services"] if s["Datacenter"] == "dc2"]
    return found[0][0] if found and found[0] else None


def test_dc1s_server_gives_the_dc2_service_a_local_vip(dc1: Dc1) -> None:
    assert wait_for(lambda: remote_vip(dc1), 10, "a VIP for dc2's api") == "240.241.0.1"


def test_glibc_in_a_pod_resolves_the_remote_only_service_to_its_local_vip(dc1: Dc1) -> None:
    wait_for(lambda: remote_vip(dc1), 10, "a VIP for dc2's api")
    for name in ("api", "api.default", "api.default.svc.cluster.local", "api.virtual.dc2.consul"):
        out = exec_in(dc1, "getent", "hosts", name)
        assert out.returncode == 0, (name, out)
        assert out.stdout.split()[0] == "240.241.0.1", (name, out.stdout)


def test_dialing_the_name_takes_the_mtls_connection_to_the_gateway_for_dc2(dc1: Dc1) -> None:
    wait_for(lambda: remote_vip(dc1), 10, "a VIP for dc2's api")
    td = dc1.mesh.client().get("/v1/connect/ca/roots")["TrustDomain"]
    expected = f"api.default.dc2.internal.{td}"

    def reached() -> bool:
        # The stand-in gateway ends the handshake, so curl fails; what matters is the SNI.
        exec_in(dc1, "curl", "-s", "-m", "3", "http://api:9090/")
        return expected in dc1.snis.read_text().split()

    wait_for(reached, 30, f"a ClientHello for {expected} at the gateway")
