"""The ``kubernetes`` auth method: a real `loom server` asks an API server for a TokenReview.

The API server here is ``tests.support.kube_standin``, a stand-in over real HTTPS (its own CA,
given as the method's ``CACert``) answering as a kube-apiserver does, because CI has no
Kubernetes; ``tests/kube/test_acl_kubernetes_real.py`` runs the same login against a real kube-apiserver
where ``KUBEBUILDER_ASSETS`` provides one. Checked: the server presents its
``ServiceAccountJWT`` and the pod's token; the consul-k8s binding rule (``BindType: service``,
``BindName: ${serviceaccount.name}``) gives a pod the identity of its ServiceAccount, so a pod
whose ServiceAccount is not named like its service gets no right on that service (the seed's
case); a token the API server does not authenticate, a user that is not a service account, a
namespace the selector refuses, a CA that does not match: refused, nothing written.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from loom.acl.jwt import JwtSigner, service_account_claims
from tests.support.kube_standin import KubeStandIn, authenticated, make_ca_and_cert
from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
METHOD = "loom-k8s-auth-method"


def sa_jwt(namespace: str, name: str) -> str:
    """A token shaped as a projected service-account token (the stand-in does not check it)."""
    signer = JwtSigner(ec.generate_private_key(ec.SECP256R1()))
    claims = service_account_claims(
        namespace=namespace,
        name=name,
        uid=str(uuid.uuid4()),
        issuer="https://kubernetes.default.svc.cluster.local",
        audiences=["https://kubernetes.default.svc.cluster.local"],
        now=dt.datetime.now(dt.UTC),
        ttl=dt.timedelta(hours=1),
    )
    return signer.sign(claims)


class Cluster:
    def __init__(self, server: ServerProcess, kube: KubeStandIn, reviewer: str) -> None:
        self.server, self.kube = server, kube
        method = {
            "Name": METHOD,
            "Type": "kubernetes",
            "Config": {"Host": kube.host, "CACert": kube.ca_pem, "ServiceAccountJWT": reviewer},
        }
        assert self.root("PUT", "/v1/acl/auth-method", method)["Type"] == "kubernetes"
        rule = {
            "AuthMethod": METHOD,
            "BindType": "service",
            "BindName": "${serviceaccount.name}",
            "Selector": 'serviceaccount.namespace != "kube-system"',
        }
        self.root("PUT", "/v1/acl/binding-rule", rule)

    def root(self, method: str, path: str, body: Any = None) -> Any:
        status, out, _ = self.server.request(method, path, body, {"X-Consul-Token": ROOT})
        assert status == 200, (path, status, out)
        return out

    def login(self, jwt: str, meta: dict[str, str] | None = None) -> tuple[int, Any]:
        body = {"AuthMethod": METHOD, "BearerToken": jwt, "Meta": meta or {}}
        status, out, _ = self.server.request("POST", "/v1/acl/login", body)
        return status, out

    def login_tokens(self) -> list[Any]:
        return [t for t in self.root("GET", "/v1/acl/tokens") if t.get("AuthMethod")]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    reviewer = sa_jwt("loom", "loom-auth-method")
    kube = KubeStandIn(reviewer)
    try:
        with acl_server(ROOT) as server:
            yield Cluster(server, kube, reviewer)
    finally:
        kube.close()


def test_a_pod_logs_in_with_its_service_account_token_after_a_token_review(
    cluster: Cluster,
) -> None:
    pod = sa_jwt("default", "web")
    cluster.kube.answers[pod] = authenticated("default", "web")
    status, token = cluster.login(pod, {"pod": "default/web-5d8f"})
    assert status == 200, token
    assert token["ServiceIdentities"] == [{"ServiceName": "web"}]
    assert token["AuthMethod"] == METHOD
    assert token["Description"] == 'token created via login: {"pod":"default/web-5d8f"}'
    [(auth, body)] = cluster.kube.seen
    assert auth == f"Bearer {cluster.kube.reviewer_jwt}"
    assert body == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": pod},
    }
    assert cluster.kube.lookups == [(auth, "/api/v1/namespaces/default/serviceaccounts/web")]
    headers = {"X-Consul-Token": token["SecretID"]}
    web = {"Name": "web", "Port": 8080}
    assert cluster.server.request("PUT", "/v1/agent/service/register", web, headers)[0] == 200


def test_a_pod_whose_service_account_is_not_its_service_cannot_write_that_service(
    cluster: Cluster,
) -> None:
    pod = sa_jwt("default", "other")
    cluster.kube.answers[pod] = authenticated("default", "other")
    status, token = cluster.login(pod)
    assert status == 200 and token["ServiceIdentities"] == [{"ServiceName": "other"}]
    headers = {"X-Consul-Token": token["SecretID"]}
    status, body, _ = cluster.server.request(
        "PUT", "/v1/agent/service/register", {"Name": "web", "Port": 8080}, headers
    )
    assert status == 403
    assert body == (
        f"Permission denied: token with AccessorID '{token['AccessorID']}' lacks permission "
        "'service:write' on \"web\"\n"
    )


@pytest.mark.parametrize(
    ("status_doc", "why"),
    [
        (None, "token review failed"),  # the stand-in's answer for a token it does not know
        ({"authenticated": False, "user": {}}, "did not authenticate"),
        ({"authenticated": True, "user": {"username": "admin", "uid": "1"}}, "service account"),
        (authenticated("kube-system", "web"), "Permission denied\n"),  # the selector refuses
    ],
)
def test_a_login_the_api_server_does_not_vouch_for_is_denied_and_writes_nothing(
    cluster: Cluster, status_doc: Any, why: str
) -> None:
    pod = sa_jwt("default", "web")
    if status_doc is not None:
        cluster.kube.answers[pod] = status_doc
    status, answer = cluster.login(pod)
    assert status == 403, answer
    assert answer.startswith("Permission denied") and why in answer, answer
    assert cluster.login_tokens() == []


def test_an_api_server_whose_certificate_the_ca_cert_does_not_sign_is_not_asked(
    cluster: Cluster,
) -> None:
    other_ca, _, _ = make_ca_and_cert()
    method = cluster.root("GET", f"/v1/acl/auth-method/{METHOD}")
    method["Config"]["CACert"] = other_ca
    cluster.root("PUT", f"/v1/acl/auth-method/{METHOD}", method)
    pod = sa_jwt("default", "web")
    cluster.kube.answers[pod] = authenticated("default", "web")
    status, answer = cluster.login(pod)
    assert status == 500 and "CERTIFICATE_VERIFY_FAILED" in answer, answer
    assert cluster.kube.seen == [] and cluster.login_tokens() == []


def test_a_reviewer_credential_the_api_server_refuses_is_the_operators_error(
    cluster: Cluster,
) -> None:
    method = cluster.root("GET", f"/v1/acl/auth-method/{METHOD}")
    method["Config"]["ServiceAccountJWT"] = sa_jwt("loom", "someone-else")
    cluster.root("PUT", f"/v1/acl/auth-method/{METHOD}", method)
    pod = sa_jwt("default", "web")
    cluster.kube.answers[pod] = authenticated("default", "web")
    status, answer = cluster.login(pod)
    assert status == 500 and "refused Loom's ServiceAccountJWT (401)" in answer, answer
    assert cluster.login_tokens() == []


def test_a_service_account_annotated_with_a_service_name_logs_in_as_that_service(
    cluster: Cluster,
) -> None:
    pod = sa_jwt("default", "web-sa")
    cluster.kube.answers[pod] = authenticated("default", "web-sa")
    cluster.kube.annotations[("default", "web-sa")] = {"consul.hashicorp.com/service-name": "web"}
    status, token = cluster.login(pod)
    assert status == 200 and token["ServiceIdentities"] == [{"ServiceName": "web"}], token
