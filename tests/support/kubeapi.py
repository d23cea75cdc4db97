"""A real etcd + kube-apiserver (+ kube-controller-manager) on loopback, for envtest-style tests.

``KUBEBUILDER_ASSETS`` names a directory holding ``kube-apiserver`` (and ``etcd``, else
Debian's ``/usr/bin/etcd``, and optionally ``kube-controller-manager``); see
/work/shared/REAL-KUBERNETES.md for how such binaries are built here. ``requires_kube`` skips
a module with a reason where there are none (as in CI); ``requires_controller_manager`` skips
a test that needs Deployments turned into pods. ``start_kube`` starts everything in one temp
directory on free ports, with an admin bearer token in ``system:masters``, RBAC and the
default admission plugins (PodSecurity included), and stops it by process id.
"""

from __future__ import annotations

import contextlib
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

ASSETS = os.environ.get("KUBEBUILDER_ASSETS", "")
HAS_APISERVER = bool(ASSETS) and Path(ASSETS, "kube-apiserver").exists()
HAS_CONTROLLER_MANAGER = HAS_APISERVER and Path(ASSETS, "kube-controller-manager").exists()

requires_kube = pytest.mark.skipif(
    not HAS_APISERVER,
    reason="KUBEBUILDER_ASSETS does not name a directory with kube-apiserver (none in CI)",
)
requires_controller_manager = pytest.mark.skipif(
    not HAS_CONTROLLER_MANAGER,
    reason="KUBEBUILDER_ASSETS holds no kube-controller-manager (Deployments make no pods)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class KubeApi:
    """A running API server: its URL, CA, admin token, and a small JSON client."""

    def __init__(self, url: str, ca_pem: str, token: str, work: Path) -> None:
        self.url, self.ca_pem, self.token, self.work = url, ca_pem, token, work
        self.context = ssl.create_default_context(cadata=ca_pem)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        token: str | None = None,
    ) -> tuple[int, Any]:
        """(status, JSON body or text) of one request, as the admin unless ``token``."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.token}",
                "Content-Type": content_type,
            },
        )
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=20) as resp:
                raw = resp.read()
                kind = resp.headers.get("Content-Type", "")
                return resp.status, json.loads(raw) if "json" in kind else raw.decode()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode()

    def service_account(self, name: str, namespace: str = "default") -> None:
        status, out = self.call(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}}
        )
        assert status == 201, out

    def sa_token(self, name: str, namespace: str = "default") -> str:
        """A TokenRequest token of the ServiceAccount (what a pod's projected token is)."""
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": 3600}}  # fmt: skip
        status, out = self.call(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request
        )
        assert status == 201, out
        token: str = out["status"]["token"]
        return token

    def kubeconfig(self) -> Path:
        """A kubeconfig file for the admin (for lightkube, kubectl and Loom's controller)."""
        path = self.work / "kubeconfig"
        (self.work / "ca.crt").write_text(self.ca_pem)
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube", "cluster": {
                "server": self.url, "certificate-authority": str(self.work / "ca.crt")}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "kube", "context": {"cluster": "kube", "user": "admin"}}],
            "current-context": "kube",
        }  # fmt: skip
        path.write_text(json.dumps(doc))
        return path


def _poll(check: Any, procs: list[subprocess.Popen[bytes]], log: Path, what: str) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"etcd or kube-apiserver exited:\n{log.read_text()[-3000:]}")
        result = check()
        if result:
            return result
        time.sleep(0.1)  # a polling interval: the loop ends when the check passes
    raise RuntimeError(f"{what} not in 60 s:\n{log.read_text()[-3000:]}")


def _serving_cert(certs: Path) -> str:
    cert = certs / "apiserver.crt"
    text = cert.read_text() if cert.exists() else ""
    return text if "-----END CERTIFICATE-----" in text else ""


def _ready(api: KubeApi) -> bool:
    try:
        return api.call("GET", "/readyz")[0] == 200
    except (OSError, ssl.SSLError):
        return False


@contextlib.contextmanager
def start_kube(*extra_args: str) -> Iterator[KubeApi]:
    """etcd and kube-apiserver (``extra_args`` added to its command line) until exit."""
    work = Path(tempfile.mkdtemp(prefix="loom-kube-"))
    etcd_bin = Path(ASSETS, "etcd") if Path(ASSETS, "etcd").exists() else Path("/usr/bin/etcd")
    client, peer, secure = free_port(), free_port(), free_port()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key = work / "sa.key"
    sa_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    admin = str(uuid.uuid4())
    (work / "tokens.csv").write_text(f'{admin},admin,admin-uid,"system:masters"\n')
    log = work / "kube.log"
    out = log.open("wb")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            [str(etcd_bin), "--data-dir", str(work / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=out, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        procs.append(subprocess.Popen(
            [str(Path(ASSETS, "kube-apiserver")),
             f"--etcd-servers=http://127.0.0.1:{client}", "--bind-address=127.0.0.1",
             "--advertise-address=127.0.0.1", f"--secure-port={secure}",
             f"--cert-dir={work / 'certs'}", "--service-cluster-ip-range=10.96.0.0/16",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             f"--service-account-key-file={sa_key}",
             f"--service-account-signing-key-file={sa_key}",
             f"--token-auth-file={work / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
             "--allow-privileged", "--endpoint-reconciler-type=none", *extra_args],
            stdout=out, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        ca = _poll(lambda: _serving_cert(work / "certs"), procs, log, "a serving certificate")
        api = KubeApi(f"https://127.0.0.1:{secure}", ca, admin, work)
        _poll(lambda: _ready(api), procs, log, "/readyz 200")
        # /readyz can answer before the bootstrap controller has made the default namespace.
        _poll(lambda: api.call("GET", "/api/v1/namespaces/default")[0] == 200, procs, log,
              "the default namespace")  # fmt: skip
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
