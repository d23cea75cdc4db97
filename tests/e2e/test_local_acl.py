"""`loom local` with ACLs on and default deny (root, real Envoy): who holds which token.

A mesh as `loom local up` makes it by default: the server with default deny, a management
token in the state directory for the host, the `loom-local` jwt auth method, and a login
token per pod's service made from a JWT the mesh signed. Checked as a user (two pods with an
intention talk over mTLS; none without one) and as an attacker on the machine: a pod's JWT
used to act as another service, a JWT signed with another key, a pod claiming another
service account, a local process without the management token writing an intention, a local
user other than root going through the unix sockets; and the modes of the files that hold
secrets.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from loom.acl.jwt import JwtSigner, service_account_claims
from loom.api import HTTPStatusError
from loom.api.client import Client
from loom.inject import PROXY_UID
from loom.local import acl
from loom.local.mesh import LocalError, LocalMesh, LocalSettings
from loom.local.netns import LocalNetSettings
from tests.support.localmesh import ECHO, curl, local_settings, seed_pair
from tests.support.mesh import free_port, wait_for

pytestmark = [pytest.mark.root, pytest.mark.envoy]


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with seed_pair(local_settings("la", "10.243.0.0/16")) as m:
        yield m


def loopback(mesh: LocalMesh, token: str) -> Client:
    """A client on the server's loopback address, as any local process could make."""
    return Client(mesh.s.http_addr, timeout=10, token=token)


def pod_file(mesh: LocalMesh, pod: str, name: str) -> Path:
    return mesh.s.pods_dir / pod / name


def login(mesh: LocalMesh, jwt: str) -> dict[str, object]:
    body = {"AuthMethod": acl.AUTH_METHOD, "BearerToken": jwt, "Meta": {"pod": "default/x"}}
    answer: dict[str, object] = loopback(mesh, "").request("POST", "/v1/acl/login", body).body
    return answer


def test_two_pods_with_an_allow_intention_talk_over_mtls_and_none_without_one(
    mesh: LocalMesh,
) -> None:
    assert curl(mesh, "static-client", "http://static-server/")[0] != 0  # default deny
    mesh.client().put("/v1/connect/intentions/exact", {"Action": "allow"},
                      source="static-client", destination="static-server")  # fmt: skip
    try:
        wait_for(
            lambda: curl(mesh, "static-client", "http://static-server/") == (0, "hello world\n"),
            15,
            "hello through both sidecars",
        )
    finally:
        mesh.client().delete(
            "/v1/connect/intentions/exact", source="static-client", destination="static-server"
        )
    wait_for(lambda: curl(mesh, "static-client", "http://static-server/")[0] != 0, 15, "denied")


def test_each_sidecar_holds_only_its_own_services_login_token(mesh: LocalMesh) -> None:
    tokens = mesh.client().get("/v1/acl/tokens", authmethod=acl.AUTH_METHOD)
    by_pod = {t["Description"]: t["ServiceIdentities"] for t in tokens}
    assert by_pod['token created via login: {"pod":"default/static-server"}'] == [
        {"ServiceName": "static-server"}
    ]
    rec = mesh.record("static-server")
    assert rec is not None
    argv = Path(f"/proc/{rec['sidecars'][0]['pid']}/cmdline").read_bytes().split(b"\0")
    token_file = pod_file(mesh, "static-server", "acl-token-static-server")
    assert argv[argv.index(b"--token-file") + 1] == str(token_file).encode()
    secret = token_file.read_text()
    self_ = loopback(mesh, secret).get("/v1/acl/token/self")
    assert self_["ServiceIdentities"] == [{"ServiceName": "static-server"}]
    assert secret != mesh.s.token_file.read_text()


def test_a_pods_jwt_logs_in_only_as_its_own_service(mesh: LocalMesh) -> None:
    jwt = pod_file(mesh, "static-client", "sa-static-client.jwt").read_text()
    token = login(mesh, jwt)
    stolen = loopback(mesh, str(token["SecretID"]))
    try:
        assert token["ServiceIdentities"] == [{"ServiceName": "static-client"}]
        with pytest.raises(HTTPStatusError) as exc:
            stolen.put("/v1/connect/intentions/exact", {"Action": "allow"},
                       source="static-client", destination="static-server")  # fmt: skip
        assert exc.value.status == 403 and "Permission denied" in str(exc.value)
        body = {"Name": "static-server", "ID": "fake-static-server", "Port": 8080}
        with pytest.raises(HTTPStatusError) as exc:
            stolen.put("/v1/agent/service/register", body)
        assert exc.value.status == 403 and "'service:write' on \"static-server\"" in str(exc.value)
    finally:
        stolen.request("POST", "/v1/acl/logout")
    assert "fake-static-server" not in mesh.client().get("/v1/agent/services")


def test_a_jwt_signed_with_another_key_is_refused(mesh: LocalMesh) -> None:
    forger = JwtSigner(ec.generate_private_key(ec.SECP256R1()))
    claims = service_account_claims(namespace="default", name="static-server", uid="u",
                                    issuer=acl.ISSUER, audiences=[acl.AUDIENCE],
                                    now=dt.datetime.now(dt.UTC), ttl=dt.timedelta(minutes=5))  # fmt: skip
    before = len(mesh.client().get("/v1/acl/tokens"))
    with pytest.raises(HTTPStatusError) as exc:
        login(mesh, forger.sign(claims))
    assert exc.value.status == 403 and "Permission denied" in str(exc.value)
    assert len(mesh.client().get("/v1/acl/tokens")) == before


def test_a_pod_claiming_another_service_account_is_refused_and_leaves_nothing(
    mesh: LocalMesh,
) -> None:
    tokens_before = len(mesh.client().get("/v1/acl/tokens"))
    with pytest.raises(LocalError) as exc:
        mesh.run("impostor", [], {}, ["sleep", "3600"], service_account="static-server")
    text = str(exc.value)
    assert "403" in text and "Permission denied" in text
    assert "'static-server'" in text and "'impostor'" in text
    assert mesh.record("impostor") is None
    assert len(mesh.client().get("/v1/acl/tokens")) == tokens_before
    assert "impostor-impostor" not in mesh.client().get("/v1/agent/services")


def test_a_local_process_without_the_management_token_cannot_write_an_intention(
    mesh: LocalMesh,
) -> None:
    for token in ("", "00000000-1111-2222-3333-444444444444"):
        with pytest.raises(HTTPStatusError) as exc:
            loopback(mesh, token).put("/v1/connect/intentions/exact", {"Action": "allow"},
                                source="*", destination="static-server")  # fmt: skip
        assert exc.value.status == 403
    assert mesh.client().get("/v1/connect/intentions") == []


def test_another_local_user_cannot_reach_the_unix_sockets_or_the_secrets(
    mesh: LocalMesh,
) -> None:
    code = (
        "import socket, sys\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        open(p).read() if not p.endswith('.sock') else socket.socket(socket.AF_UNIX).connect(p)\n"
        "        print('reached', p)\n"
        "    except PermissionError:\n"
        "        print('refused', p)\n"
    )  # fmt: skip
    paths = [mesh.s.http_socket, mesh.s.grpc_socket, mesh.s.token_file, mesh.s.signing_key_file]
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code,
         *map(str, paths)], capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert out.stdout.split("\n")[:-1] == [f"refused {p}" for p in paths], out.stderr


def test_the_state_dir_and_the_secret_files_are_private(mesh: LocalMesh) -> None:
    def mode(path: Path) -> tuple[int, int, int]:
        st = path.stat()
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    assert mode(mesh.s.net.state_dir) == (0o710, 0, PROXY_UID)  # sidecars may only traverse
    assert mode(mesh.s.token_file) == (0o600, 0, 0)
    assert mode(mesh.s.signing_key_file) == (0o600, 0, 0)
    rec = mesh.record("static-server")
    assert rec is not None
    uid = rec["uid"]
    assert mode(mesh.s.pods_dir / "static-server") == (0o750, 0, uid)  # its sidecars' UID
    assert mode(pod_file(mesh, "static-server", "sa-static-server.jwt")) == (0o600, 0, 0)
    token = pod_file(mesh, "static-server", "acl-token-static-server")
    assert mode(token)[:2] == (0o600, uid)


def test_rm_logs_the_pods_tokens_out(mesh: LocalMesh) -> None:
    mesh.run("short-lived", [], {}, ["sleep", "3600"])
    secret = pod_file(mesh, "short-lived", "acl-token-short-lived").read_text()
    assert loopback(mesh, secret).get("/v1/acl/token/self")["ServiceIdentities"] == [
        {"ServiceName": "short-lived"}
    ]
    mesh.rm("short-lived")
    with pytest.raises(HTTPStatusError) as exc:
        loopback(mesh, secret).get("/v1/acl/token/self")
    assert exc.value.status == 403 and "ACL not found" in str(exc.value)


def test_setting_up_the_auth_method_again_changes_nothing(mesh: LocalMesh) -> None:
    rules = mesh.client().get("/v1/acl/binding-rules", authmethod=acl.AUTH_METHOD)
    assert [(r["BindType"], r["BindName"]) for r in rules] == [("service", "${value.name}")]
    acl.ensure_auth_method(mesh.client(), acl.signer(mesh.s.signing_key_file))
    again = mesh.client().get("/v1/acl/binding-rules", authmethod=acl.AUTH_METHOD)
    assert [r["ID"] for r in again] == [r["ID"] for r in rules]
    assert acl.management_token(mesh.s.token_file) == mesh.s.token_file.read_text()


def _separate_mesh(tag: str, subnet: str, data_dir: Path | None) -> LocalMesh:
    state = Path(f"/run/loom-acl-{tag}-{os.getpid()}")
    return LocalMesh(LocalSettings(
        net=LocalNetSettings(prefix=f"l{tag}{os.getpid() % 10000}", subnet=subnet,
                             state_dir=state),
        http_addr=f"127.0.0.1:{free_port()}", grpc_addr=f"127.0.0.1:{free_port()}",
        data_dir=data_dir,
    ))  # fmt: skip


def test_a_later_up_on_the_same_data_reuses_the_management_token(tmp_path: Path) -> None:
    m = _separate_mesh("r", "10.242.0.0/16", tmp_path / "data")
    try:
        m.up()
        first = m.s.token_file.read_text()
        m.stop_server()
        m.up()
        assert m.s.token_file.read_text() == first
        assert loopback(m, first).get("/v1/acl/token/self")["Policies"][0]["Name"] == (
            "global-management"
        )
        rules = m.client().get("/v1/acl/binding-rules", authmethod=acl.AUTH_METHOD)
        assert len(rules) == 1
    finally:
        m.down(purge=True)
    assert not m.s.net.state_dir.exists()


def test_up_with_no_acls_is_the_mesh_without_tokens(tmp_path: Path) -> None:
    m = _separate_mesh("n", "10.241.0.0/16", None)
    env = {**os.environ, "LOOM_LOCAL_PREFIX": m.s.net.prefix, "LOOM_LOCAL_SUBNET": m.s.net.subnet,
           "LOOM_LOCAL_STATE_DIR": str(m.s.net.state_dir), "LOOM_LOCAL_DATA_DIR": "-",
           "LOOM_LOCAL_HTTP_ADDR": m.s.http_addr, "LOOM_LOCAL_GRPC_ADDR": m.s.grpc_addr}  # fmt: skip

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loom", "local", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    try:
        out = local("up", "--no-acls")
        assert out.returncode == 0, out.stderr
        assert "LOOM_HTTP_TOKEN_FILE" not in out.stdout
        assert not m.s.token_file.exists()
        out = local("run", "web", "--port", "8080", "--", *ECHO, "-text", "open", "-listen", ":8080")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "logged in" not in out.stdout
        out = local("run", "client", "--", "sleep", "3600")
        assert out.returncode == 0, out.stdout + out.stderr
        rec = m.record("client")
        assert rec is not None
        argv = Path(f"/proc/{rec['sidecars'][0]['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"--token-file" not in argv
        # No intention, and still traffic: intentions default to allow without ACLs.
        wait_for(lambda: curl(m, "client", "http://web/") == (0, "open\n"), 15, "open")
    finally:
        out = local("down")
        assert out.returncode == 0, out.stderr
