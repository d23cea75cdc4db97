"""One UID per local pod (root, real Envoy): a pod's sidecar cannot take another pod's secrets.

Two pods of a local mesh with ACLs on (default deny). Each pod's dataplane and its Envoy run
as a UID of the pod's own, the pod's redirect rules exclude that UID, and a real process with
exactly pod A's sidecar credentials (its UID and GID, the shared socket group) reads A's
token and reaches A's SDS socket but is refused B's token, B's JWT, B's bootstrap and B's SDS
socket (traffic between such pods is test_local_acl.py's). ``rm`` frees the UID, and a pod
made again under the same name gets the same one.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.dataplane.sds import socket_path
from loom.local import uids
from loom.local.mesh import LocalMesh
from tests.support.localmesh import local_settings, seed_pair

pytestmark = [pytest.mark.root, pytest.mark.envoy]

PROBE = (
    "import os, socket, sys\n"
    "for p in sys.argv[1:]:\n"
    "    try:\n"
    "        if p.endswith('.sock'):\n"
    "            socket.socket(socket.AF_UNIX).connect(p)\n"
    "        elif os.path.isdir(p):\n"
    "            os.listdir(p)\n"
    "        else:\n"
    "            open(p).read()\n"
    "        print('reached')\n"
    "    except PermissionError:\n"
    "        print('refused')\n"
)


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with seed_pair(local_settings("lu", "10.238.0.0/16")) as m:
        yield m


def record(mesh: LocalMesh, pod: str) -> dict[str, Any]:
    rec = mesh.record(pod)
    assert rec is not None
    return rec


def ids(pid: int) -> tuple[int, int, list[int]]:
    """(real UID, real GID, supplementary groups) of a running process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0]), sorted(map(int, fields["Groups"]))


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_line = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat_line[1]) == pid:
                out.append(int(entry.name))
    return out


def envoy_of(sidecar_pid: int) -> int:
    found = [p for p in children(sidecar_pid)
             if Path(f"/proc/{p}/comm").read_text().strip() == "envoy"]  # fmt: skip
    assert len(found) == 1, found
    return found[0]


def secrets_of(mesh: LocalMesh, pod: str) -> list[Path]:
    """The pod's token, JWT, sidecar work directory, bootstrap and SDS socket."""
    rec = record(mesh, pod)
    work = Path(rec["sidecars"][0]["work"])
    return [Path(rec["tokens"][f"{pod}-{pod}"]), mesh.s.pods_dir / pod / f"sa-{pod}.jwt",
            work, work / "bootstrap.json", socket_path(work)[0]]  # fmt: skip


def probe_as(uid: int, paths: list[Path]) -> list[str]:
    """What a real process with a sidecar's credentials (``uid``, the shared group) reaches."""
    out = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={uids.SOCKET_GID}", "--",
         sys.executable, "-c", PROBE, *map(str, paths)], capture_output=True, text=True,
        timeout=20,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_each_pods_dataplane_and_envoy_run_as_a_uid_of_the_pods_own(mesh: LocalMesh) -> None:
    server, client = record(mesh, "static-server"), record(mesh, "static-client")
    assert server["uid"] != client["uid"]
    for rec in (server, client):
        uid = rec["uid"]
        assert mesh.s.sidecar_uids.first <= uid < mesh.s.sidecar_uids.first + (
            mesh.s.sidecar_uids.count
        )
        dataplane = rec["sidecars"][0]["pid"]
        assert ids(dataplane) == (uid, uid, [uids.SOCKET_GID])
        assert ids(envoy_of(dataplane)) == (uid, uid, [uids.SOCKET_GID])


def test_a_sidecars_uid_reaches_its_own_secrets_and_none_of_another_pods(
    mesh: LocalMesh,
) -> None:
    client_uid = record(mesh, "static-client")["uid"]
    own, token_only = secrets_of(mesh, "static-client"), secrets_of(mesh, "static-server")
    assert all(p.exists() for p in own + token_only)
    # Its own token, work dir, bootstrap and SDS socket; not its JWT (root's, for login).
    assert probe_as(client_uid, own) == ["reached", "refused", "reached", "reached", "reached"]
    assert probe_as(client_uid, token_only) == ["refused"] * 5
    server_uid = record(mesh, "static-server")["uid"]
    assert probe_as(server_uid, [own[0], own[4]]) == ["refused", "refused"]


def test_the_pods_files_are_owned_by_its_sidecar_uid_only(mesh: LocalMesh) -> None:
    def mode(path: Path) -> tuple[int, int, int]:
        st = path.lstat()
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    uid = record(mesh, "static-server")["uid"]
    token, jwt, work, bootstrap, sds = secrets_of(mesh, "static-server")
    assert mode(mesh.s.pods_dir / "static-server") == (0o750, 0, uid)
    assert mode(token)[:2] == (0o600, uid)
    assert mode(jwt) == (0o600, 0, 0)
    assert mode(work) == (0o700, uid, uid)
    assert mode(bootstrap)[:2] == (0o600, uid)
    assert mode(sds)[:2] == (0o600, uid)
    assert mode(mesh.s.net.state_dir) == (0o710, 0, uids.SOCKET_GID)  # traverse only
    assert mode(mesh.s.http_socket)[0] == mode(mesh.s.grpc_socket)[0] == 0o660
    assert mode(mesh.s.http_socket)[2] == uids.SOCKET_GID


def test_each_pods_redirect_rules_exclude_its_own_sidecar_uid(mesh: LocalMesh) -> None:
    for pod in ("static-server", "static-client"):
        rec = record(mesh, pod)
        rules = subprocess.run(["ip", "netns", "exec", rec["netns"], "iptables-save", "-t", "nat"],
                               capture_output=True, text=True, timeout=20, check=True).stdout  # fmt: skip
        owners = {line.split("--uid-owner ")[1].split()[0]
                  for line in rules.splitlines() if "--uid-owner" in line}  # fmt: skip
        assert owners == {str(rec["uid"])}, rules


def test_rm_frees_the_uid_and_the_same_pod_made_again_gets_it_back(mesh: LocalMesh) -> None:
    mesh.run("short-lived", [], {}, ["sleep", "3600"])
    uid = record(mesh, "short-lived")["uid"]
    assert uids.allocated(mesh.s.pods_dir)["short-lived"] == uid
    mesh.rm("short-lived")
    held = uids.allocated(mesh.s.pods_dir)
    assert "short-lived" not in held and uid not in held.values()
    mesh.run("short-lived", [], {}, ["sleep", "3600"])
    try:
        assert record(mesh, "short-lived")["uid"] == uid
    finally:
        mesh.rm("short-lived")
