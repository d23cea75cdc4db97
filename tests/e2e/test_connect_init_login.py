"""`loom k8s connect-init --acl-auth-method` against a real `loom server` with ACLs on.

The pod's service-account token is a file the test writes; the API server that reviews it is
the HTTPS stand-in of ``tests.support.kube_standin`` (CI has no Kubernetes, see
``test_acl_kubernetes_login.py``). The test plays the controller (registering the seed pod's
service and sidecar with a management token). Checked: connect-init logs in with Meta
``{"pod": "default/<pod>"}``, finds the registration with its login token, and leaves the
token in the sink file with mode 0600 for the sidecar; a pod whose ServiceAccount is not named
like its service fails with ``403`` and ``Permission denied`` naming both names, writes no
token and leaves none behind on the server; a token the API server refuses fails the login.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.inject import InjectSettings, NamespaceInfo, plan_workload
from loom.inject.registration import service_registrations
from loom.k8s.manifests import load_documents, pod_templates
from tests.api.test_acl_kubernetes_login import METHOD, ROOT, Cluster, sa_jwt
from tests.support.kube_standin import KubeStandIn, authenticated
from tests.support.server import ServerProcess, acl_server
from tests.unit.inject.golden_cases import CASE_DIR

POD = "static-server-7d9f"
ENV = {k: v for k, v in os.environ.items() if "HTTP_TOKEN" not in k}  # no token but the login's


def register_seed_pod(server: ServerProcess, root: str = ROOT) -> None:
    """Seed 002's pod registered as the controller would (with the management token)."""
    docs = load_documents((CASE_DIR / "seed-static-server-pod.yaml").read_text())
    pod = next(pod for doc in docs for _, pod, _ in pod_templates(doc))
    plan = plan_workload(pod, NamespaceInfo("default"), InjectSettings())
    [body] = service_registrations(plan, POD, "default", "10.1.0.7")
    status, out, _ = server.request(
        "PUT", "/v1/agent/service/register", body, {"X-Consul-Token": root}
    )
    assert status == 200, out


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reviewer = sa_jwt("loom", "loom-auth-method")
    kube = KubeStandIn(reviewer)
    try:
        with acl_server(ROOT) as server:
            yield Cluster(server, kube, reviewer)
    finally:
        kube.close()


def connect_init(server: ServerProcess, out: Path, bearer: Path, *extra: str) -> tuple[int, str]:
    proc = subprocess.run(
        [
            sys.executable, "-m", "loom", "k8s", "connect-init",
            "--http-addr", server.http, "--pod-name", POD, "--pod-namespace", "default",
            "--output-dir", str(out), "--timeout", "10", "--log-interval", "0.5",
            "-acl-auth-method", METHOD, "-bearer-token-file", str(bearer), *extra,
        ],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    return proc.returncode, proc.stderr


def pod_token(cluster: Cluster, tmp_path: Path, account: str) -> Path:
    jwt = sa_jwt("default", account)
    cluster.kube.answers[jwt] = authenticated("default", account)
    path = tmp_path / "sa-token"
    path.write_text(jwt + "\n")
    return path


def login_tokens(cluster: Cluster) -> list[Any]:
    return cluster.login_tokens()


def test_connect_init_logs_in_and_leaves_its_token_for_the_sidecar(
    cluster: Cluster, tmp_path: Path
) -> None:
    register_seed_pod(cluster.server)
    out = tmp_path / "shared"
    code, err = connect_init(cluster.server, out, pod_token(cluster, tmp_path, "static-server"))
    assert code == 0, err
    assert "logged in through auth method" in err
    sink = out / "acl-token"
    assert stat.S_IMODE(sink.stat().st_mode) == 0o600
    secret = sink.read_text()
    status, me, _ = cluster.server.request(
        "GET", "/v1/acl/token/self", headers={"X-Consul-Token": secret}
    )
    assert status == 200
    assert me["Description"] == f'token created via login: {{"pod":"default/{POD}"}}'
    assert me["ServiceIdentities"] == [{"ServiceName": "static-server"}]
    assert (out / "proxyid").read_text() == f"{POD}-static-server-sidecar-proxy"


def test_a_pod_whose_service_account_is_not_its_service_fails_with_permission_denied(
    cluster: Cluster, tmp_path: Path
) -> None:
    register_seed_pod(cluster.server)
    out = tmp_path / "shared"
    code, err = connect_init(cluster.server, out, pod_token(cluster, tmp_path, "default-sa"))
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert "403" in last and "Permission denied" in last, last
    assert "'default-sa'" in last and "'static-server'" in last, last
    assert not (out / "acl-token").exists()
    assert login_tokens(cluster) == []  # the useless token was logged out


def test_a_service_account_token_the_api_server_refuses_fails_the_login(
    cluster: Cluster, tmp_path: Path
) -> None:
    register_seed_pod(cluster.server)
    bearer = tmp_path / "sa-token"
    bearer.write_text(sa_jwt("default", "static-server"))  # the stand-in does not know it
    code, err = connect_init(cluster.server, tmp_path / "shared", bearer)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("loom: Error logging in: Unexpected response code: 403"), last
    assert "Permission denied" in last
    assert login_tokens(cluster) == [] and not (tmp_path / "shared" / "acl-token").exists()


def test_a_missing_service_account_token_file_is_named(cluster: Cluster, tmp_path: Path) -> None:
    code, err = connect_init(cluster.server, tmp_path / "shared", tmp_path / f"{uuid.uuid4()}")
    assert code == 1 and "Error reading the service account token" in err
