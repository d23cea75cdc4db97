"""The ``kubernetes`` auth method against a real kube-apiserver (``KUBEBUILDER_ASSETS``).

Where ``KUBEBUILDER_ASSETS`` names a directory holding ``kube-apiserver`` (and ``etcd``, else
Debian's ``/usr/bin/etcd``), this starts etcd and the API server on loopback (see
/work/shared/REAL-KUBERNETES.md), makes ServiceAccounts and asks the TokenRequest API for their
tokens, exactly what a pod's projected token is. The Loom server's login then sends a real
TokenReview with a real reviewer credential (a ServiceAccount bound to
``system:auth-delegator``) and trusts the API server's own CA. Elsewhere (CI) it is skipped;
``test_acl_kubernetes_login.py`` runs the same logins against a recorded-answer stand-in.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.server import ServerProcess, start_server

ASSETS = os.environ.get("KUBEBUILDER_ASSETS", "")
pytestmark = pytest.mark.skipif(
    not ASSETS or not Path(ASSETS, "kube-apiserver").exists(),
    reason="KUBEBUILDER_ASSETS does not name a kube-apiserver (none in CI); "
    "test_acl_kubernetes_login.py covers the login against a stand-in",
)
ROOT = str(uuid.uuid4())
ADMIN = str(uuid.uuid4())
METHOD = "loom-k8s-auth-method"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class KubeApi:
    def __init__(self, url: str, ca_pem: str) -> None:
        self.url, self.ca_pem = url, ca_pem
        self.context = ssl.create_default_context(cadata=ca_pem)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=10) as resp:
                raw = resp.read()
                kind = resp.headers.get("Content-Type", "")
                return resp.status, json.loads(raw) if "json" in kind else raw.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def service_account(self, name: str) -> None:
        status, out = self.call(
            "POST", "/api/v1/namespaces/default/serviceaccounts", {"metadata": {"name": name}}
        )
        assert status == 201, out

    def token(self, name: str) -> str:
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": 3600}}  # fmt: skip
        status, out = self.call(
            "POST", f"/api/v1/namespaces/default/serviceaccounts/{name}/token", request
        )
        assert status == 201, out
        token: str = out["status"]["token"]
        return token


def _wait_ready(api: KubeApi, procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"etcd or kube-apiserver exited:\n{log.read_text()[-3000:]}")
        try:
            if api.call("GET", "/readyz")[0] == 200:
                return
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.1)  # a polling interval: the loop ends on /readyz answering 200
    raise RuntimeError(f"kube-apiserver not ready in 60 s:\n{log.read_text()[-3000:]}")


def _serving_cert(certs: Path, procs: list[subprocess.Popen[bytes]], log: Path) -> str:
    """The self-signed certificate kube-apiserver writes at start, once it is complete."""
    cert = certs / "apiserver.crt"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"etcd or kube-apiserver exited:\n{log.read_text()[-3000:]}")
        text = cert.read_text() if cert.exists() else ""
        if "-----END CERTIFICATE-----" in text:
            return text
        time.sleep(0.1)  # a polling interval: the loop ends when the file is complete
    raise RuntimeError(f"kube-apiserver wrote no certificate in 30 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApi]:
    work = Path(tempfile.mkdtemp(prefix="loom-kube-"))
    etcd_bin = Path(ASSETS, "etcd") if Path(ASSETS, "etcd").exists() else Path("/usr/bin/etcd")
    client, peer, secure = _port(), _port(), _port()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key = work / "sa.key"
    sa_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (work / "tokens.csv").write_text(f'{ADMIN},admin,admin-uid,"system:masters"\n')
    log = work / "kube.log"
    out = log.open("wb")
    procs = [
        subprocess.Popen(
            [str(etcd_bin), "--data-dir", str(work / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=out, stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [str(Path(ASSETS, "kube-apiserver")),
             f"--etcd-servers=http://127.0.0.1:{client}", "--bind-address=127.0.0.1",
             "--advertise-address=127.0.0.1", f"--secure-port={secure}",
             f"--cert-dir={work / 'certs'}", "--service-cluster-ip-range=10.96.0.0/16",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             f"--service-account-key-file={sa_key}",
             f"--service-account-signing-key-file={sa_key}",
             f"--token-auth-file={work / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
             "--allow-privileged", "--endpoint-reconciler-type=none"],
            stdout=out, stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    try:
        api = KubeApi(f"https://127.0.0.1:{secure}", _serving_cert(work / "certs", procs, log))
        _wait_ready(api, procs, log)
        api.service_account("loom-auth-method")
        # What consul-k8s grants its auth method: TokenReview, and reading ServiceAccounts.
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "loom-auth-method"},
                "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"],
                           "verbs": ["get"]}]}  # fmt: skip
        status, body = api.call("POST", f"{rbac}/clusterroles", role)
        assert status == 201, body
        for name, role_name in (("loom-auth-method", "system:auth-delegator"),
                                ("loom-auth-method-sa-reader", "loom-auth-method")):  # fmt: skip
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": role_name},
                "subjects": [{"kind": "ServiceAccount", "name": "loom-auth-method",
                              "namespace": "default"}],
            }  # fmt: skip
            status, body = api.call("POST", f"{rbac}/clusterrolebindings", binding)
            assert status == 201, body
        yield api
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def server(kube: KubeApi) -> Iterator[ServerProcess]:
    server = start_server("--acl-default-policy", "deny", "--acl-initial-management-token", ROOT)
    mgmt = {"X-Consul-Token": ROOT}
    method = {
        "Name": METHOD,
        "Type": "kubernetes",
        "Config": {
            "Host": kube.url,
            "CACert": kube.ca_pem,
            "ServiceAccountJWT": kube.token("loom-auth-method"),
        },
    }
    try:
        assert server.request("PUT", "/v1/acl/auth-method", method, mgmt)[0] == 200
        rule = {"AuthMethod": METHOD, "BindType": "service", "BindName": "${serviceaccount.name}"}
        assert server.request("PUT", "/v1/acl/binding-rule", rule, mgmt)[0] == 200
        yield server
    finally:
        server.stop()


def _login(server: ServerProcess, jwt: str) -> tuple[int, Any]:
    body = {"AuthMethod": METHOD, "BearerToken": jwt, "Meta": {"pod": "default/p"}}
    status, out, _ = server.request("POST", "/v1/acl/login", body)
    return status, out


def test_a_real_service_account_token_logs_in_as_its_service_account(
    kube: KubeApi, server: ServerProcess
) -> None:
    kube.service_account("web")
    status, token = _login(server, kube.token("web"))
    assert status == 200, token
    assert token["ServiceIdentities"] == [{"ServiceName": "web"}]
    headers = {"X-Consul-Token": token["SecretID"]}
    web = {"Name": "web", "Port": 8080}
    assert server.request("PUT", "/v1/agent/service/register", web, headers)[0] == 200


def test_a_real_token_of_another_service_account_cannot_write_the_service(
    kube: KubeApi, server: ServerProcess
) -> None:
    kube.service_account("other")
    status, token = _login(server, kube.token("other"))
    assert status == 200, token
    headers = {"X-Consul-Token": token["SecretID"]}
    status, body, _ = server.request(
        "PUT", "/v1/agent/service/register", {"Name": "web", "Port": 8080}, headers
    )
    assert status == 403 and "lacks permission 'service:write' on \"web\"" in body


def test_a_token_the_real_api_server_does_not_authenticate_is_denied(
    kube: KubeApi, server: ServerProcess
) -> None:
    kube.service_account("gone")
    jwt = kube.token("gone")
    assert kube.call("DELETE", "/api/v1/namespaces/default/serviceaccounts/gone")[0] == 200
    status, answer = _login(server, jwt)
    assert status == 403 and answer.startswith("Permission denied"), answer
    tampered = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
    status, answer = _login(server, tampered)
    assert status == 403 and answer.startswith("Permission denied"), answer
    _, tokens, _ = server.request("GET", "/v1/acl/tokens", headers={"X-Consul-Token": ROOT})
    assert [t for t in tokens if t.get("AuthMethod")] == []


@pytest.mark.parametrize("account", ["static-server", "static-client"])
def test_connect_init_logs_in_with_a_real_token_and_only_its_own_service_account_passes(
    kube: KubeApi, server: ServerProcess, tmp_path: Path, account: str
) -> None:
    from tests.e2e.test_connect_init_login import POD, connect_init, register_seed_pod

    register_seed_pod(server, ROOT)
    kube.service_account(account)
    bearer = tmp_path / "token"
    bearer.write_text(kube.token(account))
    code, err = connect_init(server, tmp_path / "shared", bearer)
    if account == "static-server":
        assert code == 0, err
        assert (tmp_path / "shared" / "proxyid").read_text() == f"{POD}-static-server-sidecar-proxy"
    else:
        last = err.strip().splitlines()[-1]
        assert code == 1 and "403" in last and "Permission denied" in last, err
        assert "'static-client'" in last and "'static-server'" in last
