"""Two datacenters of `loom local` on one machine (root): each on its own node network, the
gateways' WAN addresses the only path between them, and `down` of one leaving the other.

The pods here are plain (no sidecar, ACLs off) so that what is checked is the topology
itself: a dc1 pod cannot reach a dc2 pod (nor dc2's gateway), the two "gateway" pods reach
each other over the WAN, and dc2's `down` removes exactly dc2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.local import wan
from loom.local.datacenters import BaseLayout
from loom.local.mesh import LocalMesh
from loom.local.settings import for_datacenter
from loom.local.workload import AppProcess
from tests.support.mesh import free_port, wait_for

pytestmark = [pytest.mark.root]
ECHO = (sys.executable, "-m", "loom", "http-echo")


def _echo(text: str, port: int) -> list[AppProcess]:
    return [AppProcess(None, (*ECHO, "-text", text, "-listen", f":{port}"))]


def _gateway_pod(mesh: LocalMesh) -> str:
    """A plain pod standing for the gateway: on the node network and on the WAN."""
    assert mesh.s.wan is not None
    address = mesh.s.wan.address(mesh.s.wan_index)
    rec = mesh.run_pod("gw", None, _echo(f"gateway {mesh.s.datacenter}", 8443),
                       extra={"wan": {"ip": address}})  # fmt: skip
    assert wan.attach(mesh.s.wan, mesh.s.datacenter, mesh.s.wan_index, rec["netns"]) == address
    return address


@pytest.fixture(scope="module")
def base() -> Iterator[BaseLayout]:
    root = Path(f"/run/l2-test-{os.getpid()}")
    root.mkdir(mode=0o755)
    yield BaseLayout(
        prefix=f"l2{os.getpid() % 1000}", subnet="10.212.0.0/16", state_dir=root / "local",
        data_dir=None, http_addr=f"127.0.0.1:{free_port()}",
        grpc_addr=f"127.0.0.1:{free_port()}", wan_subnet="10.211.42.0/24",
    )  # fmt: skip
    left = list(root.iterdir())
    shutil.rmtree(root, ignore_errors=True)
    assert not left, f"left behind: {left}"


@pytest.fixture(scope="module")
def dcs(base: BaseLayout) -> Iterator[dict[str, LocalMesh]]:
    meshes = {
        dc: LocalMesh(for_datacenter(base, dc, acl_default_policy=None)) for dc in ("dc1", "dc2")
    }
    try:
        dc1, dc2 = meshes["dc1"], meshes["dc2"]
        dc1.run_pod("prober", None, [AppProcess(None, ("sleep", "3600"))])
        dc1.run_pod("near", None, _echo("near dc1", 8080))
        dc2.run_pod("target", None, _echo("target dc2", 8080))
        for mesh in meshes.values():
            _gateway_pod(mesh)
        yield meshes
    finally:
        for mesh in reversed(meshes.values()):
            mesh.down()


def curl(mesh: LocalMesh, pod: str, url: str) -> tuple[int, str]:
    argv = mesh.exec_argv(pod, ["curl", "-s", "-m", "2", url])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return out.returncode, out.stdout.strip()


def ip_of(mesh: LocalMesh, pod: str) -> str:
    rec = mesh.record(pod)
    assert rec is not None
    return str(rec["ip"])


def test_each_datacenter_has_its_own_server_subnet_and_namespaces(
    dcs: dict[str, LocalMesh],
) -> None:
    dc1, dc2 = dcs["dc1"], dcs["dc2"]
    assert dc1.s.net.subnet == "10.212.0.0/16" and dc2.s.net.subnet == "10.213.0.0/16"
    assert ip_of(dc2, "target").startswith("10.213.")
    assert dc1.s.net.node_netns != dc2.s.net.node_netns
    for mesh in (dc1, dc2):
        assert mesh.client().get("/v1/agent/self")["Config"]["Datacenter"] == mesh.s.datacenter


def test_a_dc1_pod_reaches_its_own_datacenter_but_no_dc2_address(
    dcs: dict[str, LocalMesh],
) -> None:
    dc1, dc2 = dcs["dc1"], dcs["dc2"]
    assert curl(dc1, "prober", f"http://{ip_of(dc1, 'near')}:8080/") == (0, "near dc1")
    assert dc2.s.wan is not None
    for address in (ip_of(dc2, "target"), ip_of(dc2, "gw"), dc2.s.wan.address(dc2.s.wan_index)):
        code, _ = curl(dc1, "prober", f"http://{address}:8080/")
        assert code != 0, f"a dc1 pod reached {address} of dc2"
    code, _ = curl(dc2, "target", f"http://{ip_of(dc1, 'near')}:8080/")
    assert code != 0, "a dc2 pod reached a dc1 pod"


def test_the_gateways_reach_each_other_over_the_wan_and_only_there(
    dcs: dict[str, LocalMesh],
) -> None:
    dc1, dc2 = dcs["dc1"], dcs["dc2"]
    assert dc1.s.wan is not None
    wan1, wan2 = (m.s.wan.address(m.s.wan_index) for m in (dc1, dc2) if m.s.wan)
    assert curl(dc1, "gw", f"http://{wan2}:8443/") == (0, "gateway dc2")
    assert curl(dc2, "gw", f"http://{wan1}:8443/") == (0, "gateway dc1")
    code, _ = curl(dc1, "gw", f"http://{ip_of(dc2, 'target')}:8080/")
    assert code != 0, "dc1's gateway reached a dc2 pod's LAN address"
    assert set(wan.attachments(dc1.s.wan)) == {"dc1", "dc2"}


def test_down_of_dc2_removes_exactly_dc2_and_dc1_keeps_working(
    dcs: dict[str, LocalMesh],
) -> None:
    dc1, dc2 = dcs["dc1"], dcs["dc2"]
    assert dc1.s.wan is not None
    dc2_prefix = dc2.s.net.prefix + "-"
    dc2.down()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert dc2_prefix not in namespaces
    assert not dc2.s.net.state_dir.exists()
    assert set(wan.attachments(dc1.s.wan)) == {"dc1"}
    assert curl(dc1, "prober", f"http://{ip_of(dc1, 'near')}:8080/") == (0, "near dc1")
    assert dc1.client().get("/v1/status/leader")
    wait_for(lambda: curl(dc1, "gw", f"http://{ip_of(dc1, 'near')}:8080/")[0] == 0, 10, "dc1")
    dc1.down()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert wan.net_settings(dc1.s.wan).node_netns not in namespaces
    assert not dc1.s.wan.state_dir.exists()
