"""`loom k8s controller` with ACLs: a pod that goes away takes its login tokens with it.

Real: the Loom server (ACLs on, default deny), the controller process (with a management
token, as consul-k8s's connect-injector holds ``acl:write``), the logins (``POST
/v1/acl/login`` through a ``kubernetes`` method). Stand-ins, because no Kubernetes runs here:
``FakeKubeApi`` (the pod informer's list and watch, see ``test_controller.py``) and
``KubeStandIn`` (the TokenReview the logins need).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_acl_kubernetes_login import METHOD, ROOT, Cluster, sa_jwt
from tests.e2e.test_controller import FakeKubeApi, kube_api, kubeconfig, wait_for
from tests.support.kube_standin import KubeStandIn, authenticated
from tests.support.server import acl_server
from tests.unit.inject.test_controller import injected_pod

__all__ = ["kube_api"]  # the fixture, used by name


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reviewer = sa_jwt("loom", "loom-auth-method")
    kube = KubeStandIn(reviewer)
    try:
        with acl_server(ROOT) as server:
            yield Cluster(server, kube, reviewer)
    finally:
        kube.close()


@pytest.fixture
def controller(cluster: Cluster, kube_api: FakeKubeApi, tmp_path: Path) -> Iterator[Path]:
    values = tmp_path / "values.yaml"
    values.write_text(f"connectInject:\n  overrideAuthMethodName: {METHOD}\n")
    log_path = tmp_path / "controller.log"
    env = {k: v for k, v in os.environ.items() if "HTTP_TOKEN" not in k}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loom", "k8s", "controller",
             "--http-addr", cluster.server.http, "--values", str(values),
             "--kubeconfig", str(kubeconfig(tmp_path / "kubeconfig", kube_api.port))],
            stdout=log, stderr=subprocess.STDOUT, text=True,
            env={**env, "CONSUL_HTTP_TOKEN": ROOT},
        )  # fmt: skip
    try:
        yield log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _login(cluster: Cluster, pod: str) -> Any:
    jwt = sa_jwt("default", "api")
    cluster.kube.answers[jwt] = authenticated("default", "api")
    status, token = cluster.login(jwt, {"pod": pod})
    assert status == 200, token
    return token


def test_the_controller_deletes_the_login_tokens_of_a_pod_that_is_gone_and_no_other(
    cluster: Cluster, kube_api: FakeKubeApi, controller: Path
) -> None:
    wait_for(
        "the initial list", lambda: "listed 1 namespaces" in controller.read_text(), controller
    )
    pod = injected_pod("api-7f9c", container="api", ip="10.0.0.7")
    kube_api.apply("pods", "ADDED", pod)
    wait_for(
        "the registration",
        lambda: "api-7f9c-api" in cluster.root("GET", "/v1/agent/services"),
        controller,
    )
    gone = _login(cluster, "default/api-7f9c")
    kept = _login(cluster, "default/api-55b1")
    ordinary = cluster.root("PUT", "/v1/acl/token", {"Description": "default/api-7f9c"})

    kube_api.apply("pods", "DELETED", pod)
    wait_for(
        "the token's deletion",
        lambda: gone["AccessorID"] not in [t["AccessorID"] for t in cluster.login_tokens()],
        controller,
    )
    assert [t["AccessorID"] for t in cluster.login_tokens()] == [kept["AccessorID"]]
    assert cluster.root("GET", f"/v1/acl/token/{ordinary['AccessorID']}")["Description"] == (
        "default/api-7f9c"
    )
    assert f"deleted login token {gone['AccessorID']} (its pod is gone)" in controller.read_text()
    assert "api-7f9c-api" not in cluster.root("GET", "/v1/agent/services")
