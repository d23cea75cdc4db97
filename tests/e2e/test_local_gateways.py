"""`loom local up --datacenter dc2 --primary-datacenter dc1` (root, real Envoy): two federated
servers, a mesh gateway pod in each (registered with its LAN and WAN addresses, run by
`loom dataplane`, logged in with its own token), proxy-defaults `MeshGateway.Mode = local` in
both, and each gateway's Envoy listening on its WAN address, reachable from the other gateway
and from no pod. Skipped, naming the part, until the federation foundation and the mesh
gateways are in the branch."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.local.datacenters import BaseLayout
from loom.local.federation import federate
from loom.local.gateway import GATEWAY, GATEWAY_PORT, gateway_record
from loom.local.mesh import LocalMesh
from loom.local.settings import for_datacenter
from tests.support.mesh import free_port, wait_for

pytestmark = [pytest.mark.root, pytest.mark.envoy]
PARTS = {
    "loom.control.federation": "the federation foundation (wan)",
    "loom.xds.translate.gateway": "mesh gateways (meshgw)",
}


JOIN = {"loom.control.replication": "the WAN join and replication (wan)"}


def _missing(parts: dict[str, str] = PARTS) -> str | None:
    for module, what in parts.items():
        if importlib.util.find_spec(module) is None:
            return f"{what} has not landed: no {module}"
    return None


def _gateway_config_missing() -> str | None:
    from loom.xds import view

    if not hasattr(view, "collect_gateway_inputs"):
        return "the mesh gateway's xDS (meshgw's collect_gateway_inputs) has not landed"
    return None


@pytest.fixture(scope="module")
def dcs() -> Iterator[tuple[LocalMesh, LocalMesh]]:
    reason = _missing() or _gateway_config_missing()
    if reason is not None:
        pytest.skip(reason)
    root = Path(f"/run/l2-gw-{os.getpid()}")
    root.mkdir(mode=0o755)
    port = free_port()
    base = BaseLayout(
        prefix=f"l2g{os.getpid() % 1000}", subnet="10.214.0.0/16", state_dir=root / "local",
        data_dir=None, http_addr=f"127.0.0.1:{port}", grpc_addr=f"127.0.0.1:{free_port()}",
        wan_subnet="10.211.43.0/24",
    )  # fmt: skip
    dc1 = LocalMesh(for_datacenter(base, "dc1", default_policy="allow"))
    dc2 = LocalMesh(for_datacenter(base, "dc2", default_policy="allow"))
    try:
        federate(dc1, dc2)
        dc1.run("prober", [], {"transparent-proxy": "false"}, ["sleep", "3600"])
        yield dc1, dc2
    finally:
        dc2.down()
        dc1.down()
        left = list(root.iterdir())
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"left behind: {left}"


def _wan(mesh: LocalMesh) -> str:
    assert mesh.s.wan is not None
    return mesh.s.wan.address(mesh.s.wan_index)


def _connects(mesh: LocalMesh, pod: str, address: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({address!r}, {port}), timeout=2)"
    argv = mesh.exec_argv(pod, [sys.executable, "-c", code])
    return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0


def test_both_servers_know_both_datacenters(dcs: tuple[LocalMesh, LocalMesh]) -> None:
    reason = _missing(JOIN)
    if reason is not None:
        pytest.skip(reason)
    for mesh in dcs:
        known = wait_for(
            lambda m=mesh: sorted(m.client().get("/v1/catalog/datacenters")) == ["dc1", "dc2"],
            20, f"{mesh.s.datacenter} knowing both datacenters",
        )  # fmt: skip
        assert known


def test_each_gateway_is_registered_with_its_lan_and_wan_addresses_and_runs(
    dcs: tuple[LocalMesh, LocalMesh],
) -> None:
    for mesh in dcs:
        rec = gateway_record(mesh)
        assert rec is not None, f"{mesh.s.datacenter}: no running gateway"
        (entry,) = mesh.client().get(f"/v1/catalog/service/{GATEWAY}")
        assert entry["ServiceKind"] == "mesh-gateway"
        assert entry["ServiceTaggedAddresses"]["lan"] == {
            "Address": rec["ip"],
            "Port": GATEWAY_PORT,
        }
        assert entry["ServiceTaggedAddresses"]["wan"] == {
            "Address": _wan(mesh),
            "Port": GATEWAY_PORT,
        }
        mode = mesh.client().get("/v1/config/proxy-defaults/global")["MeshGateway"]["Mode"]
        assert mode == "local"


def test_the_gateways_listen_on_the_wan_for_each_other_and_no_pod_reaches_them(
    dcs: tuple[LocalMesh, LocalMesh],
) -> None:
    dc1, dc2 = dcs
    wait_for(lambda: _connects(dc1, GATEWAY, _wan(dc2), GATEWAY_PORT), 20, "dc1 gw -> dc2 gw")
    wait_for(lambda: _connects(dc2, GATEWAY, _wan(dc1), GATEWAY_PORT), 20, "dc2 gw -> dc1 gw")
    assert not _connects(dc1, "prober", _wan(dc2), GATEWAY_PORT)
    gw2 = dc2.record(GATEWAY)
    assert gw2 is not None
    assert not _connects(dc1, "prober", gw2["ip"], GATEWAY_PORT)


def test_a_gateway_removed_is_deregistered_and_off_the_wan(
    dcs: tuple[LocalMesh, LocalMesh],
) -> None:
    dc1, dc2 = dcs
    assert dc2.s.wan is not None
    dc2.rm(GATEWAY)
    assert dc2.client().get(f"/v1/catalog/service/{GATEWAY}") == []
    from loom.local import wan

    assert set(wan.attachments(dc2.s.wan)) == {"dc1"}
    assert not _connects(dc1, GATEWAY, _wan(dc2), GATEWAY_PORT)
    assert gateway_record(dc1) is not None  # dc1's stays
