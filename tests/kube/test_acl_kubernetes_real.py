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

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kubeapi import KubeApi, requires_kube, start_kube
from tests.support.server import ServerProcess, acl_server

pytestmark = requires_kube
ROOT = str(uuid.uuid4())
METHOD = "loom-k8s-auth-method"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApi]:
    with start_kube() as api:
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


@pytest.fixture
def server(kube: KubeApi) -> Iterator[ServerProcess]:
    mgmt = {"X-Consul-Token": ROOT}
    method = {
        "Name": METHOD,
        "Type": "kubernetes",
        "Config": {
            "Host": kube.url,
            "CACert": kube.ca_pem,
            "ServiceAccountJWT": kube.sa_token("loom-auth-method"),
        },
    }
    with acl_server(ROOT) as server:
        assert server.request("PUT", "/v1/acl/auth-method", method, mgmt)[0] == 200
        rule = {"AuthMethod": METHOD, "BindType": "service", "BindName": "${serviceaccount.name}"}
        assert server.request("PUT", "/v1/acl/binding-rule", rule, mgmt)[0] == 200
        yield server


def _login(server: ServerProcess, jwt: str) -> tuple[int, Any]:
    body = {"AuthMethod": METHOD, "BearerToken": jwt, "Meta": {"pod": "default/p"}}
    status, out, _ = server.request("POST", "/v1/acl/login", body)
    return status, out


def test_a_real_service_account_token_logs_in_as_its_service_account(
    kube: KubeApi, server: ServerProcess
) -> None:
    kube.service_account("web")
    status, token = _login(server, kube.sa_token("web"))
    assert status == 200, token
    assert token["ServiceIdentities"] == [{"ServiceName": "web"}]
    headers = {"X-Consul-Token": token["SecretID"]}
    web = {"Name": "web", "Port": 8080}
    assert server.request("PUT", "/v1/agent/service/register", web, headers)[0] == 200


def test_a_real_token_of_another_service_account_cannot_write_the_service(
    kube: KubeApi, server: ServerProcess
) -> None:
    kube.service_account("other")
    status, token = _login(server, kube.sa_token("other"))
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
    jwt = kube.sa_token("gone")
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
    bearer.write_text(kube.sa_token(account))
    code, err = connect_init(server, tmp_path / "shared", bearer)
    if account == "static-server":
        assert code == 0, err
        assert (tmp_path / "shared" / "proxyid").read_text() == f"{POD}-static-server-sidecar-proxy"
    else:
        last = err.strip().splitlines()[-1]
        assert code == 1 and "403" in last and "Permission denied" in last, err
        assert "'static-client'" in last and "'static-server'" in last
