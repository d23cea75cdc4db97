"""The kubernetes auth method's pure half, and the seed's mismatch case end to end (pure).

TokenReview answers here are recorded shapes of the Kubernetes API's
(``authentication.k8s.io/v1``), not a live API server: the call is wiring, not this module.
The chain review -> variables -> binding rule -> login token -> authorizer is run whole to
show the seed's rule: a pod whose ServiceAccount is not named after its service gets an
identity for the account's name, and asking to write the service is Permission denied.
"""

from __future__ import annotations

import datetime as dt

import pytest

from loom.acl.authorizer import Authorizer
from loom.acl.binding import BindingRule, bind, login_token
from loom.acl.errors import PermissionDenied
from loom.acl.kubernetes import (
    VARIABLES,
    KubernetesConfig,
    KubernetesLoginRefused,
    login_variables,
    token_review_request,
)
from loom.acl.records import AuthMethod, resolve
from loom.acl.rules import Access
from loom.acl.wire import RecordError

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


def review(
    username: str = "system:serviceaccount:default:static-server", **status: object
) -> dict[str, object]:
    body: dict[str, object] = {
        "authenticated": True,
        "user": {"username": username, "uid": "9b1c-uid"},
    }
    body.update(status)
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": body}


def test_an_authenticated_service_account_becomes_the_binding_variables() -> None:
    assert login_variables(review()) == {
        "serviceaccount.namespace": "default",
        "serviceaccount.name": "static-server",
        "serviceaccount.uid": "9b1c-uid",
    }
    assert token_review_request(JWT) == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": JWT},
    }


@pytest.mark.parametrize(
    "answer",
    [
        review(authenticated=False),
        review(error="token has expired"),
        review("kubernetes-admin"),
        review("system:node:worker-1"),
        review("system:serviceaccount:default"),
        review("system:serviceaccount:default:web:extra"),
        review("system:serviceaccount:Default:web"),
        review("system:serviceaccount:a/b:web"),
        review("system:serviceaccount::web"),
        review(user={"username": "system:serviceaccount:default:web"}),
        {"kind": "Status", "status": "Failure"},
        "not json",
    ],
)
def test_a_review_that_does_not_vouch_for_a_service_account_is_refused(answer: object) -> None:
    with pytest.raises(KubernetesLoginRefused):
        login_variables(answer)


def test_the_method_config_needs_a_host_and_a_reviewer_token() -> None:
    config = KubernetesConfig.from_json({"Host": "https://10.0.0.1:6443", "ServiceAccountJWT": JWT})
    assert config.host == "https://10.0.0.1:6443"
    for doc, field in [
        ({"ServiceAccountJWT": JWT}, "Host"),
        ({"Host": "ftp://x", "ServiceAccountJWT": JWT}, "Host"),
        ({"Host": "https://k8s"}, "ServiceAccountJWT"),
        ({"Host": "https://k8s", "ServiceAccountJWT": "not a jwt"}, "ServiceAccountJWT"),
        ({"Host": "https://k8s", "ServiceAccountJWT": JWT, "CACert": "nope"}, "CACert"),
        ({"Host": "https://k8s", "ServiceAccountJWT": JWT, "MapNamespaces": True}, "MapNamespaces"),
    ]:
        with pytest.raises(RecordError, match=f"field '{field}'"):
            KubernetesConfig.from_json(doc)


SEED_RULE = BindingRule.from_json(
    {
        "AuthMethod": "loom-k8s",
        "BindType": "service",
        "BindName": "${serviceaccount.name}",
        "Selector": 'serviceaccount.namespace == "default"',
    },
    VARIABLES,
)
METHOD = AuthMethod("loom-k8s", "kubernetes", max_token_ttl=dt.timedelta(hours=1))


def authorizer_for(answer: object) -> Authorizer:
    bound = bind([SEED_RULE], method="loom-k8s", vars=login_variables(answer), datacenter="dc1")
    token = login_token(bound, METHOD, accessor_id="acc-1", secret_id="sec-1", now=NOW)
    return resolve(token, policies={}, roles={}, datacenter="dc1", default_allow=False, now=NOW)


def test_a_pod_whose_account_matches_its_service_may_write_it_and_its_sidecar() -> None:
    authz = authorizer_for(review())
    authz.check("service", Access.WRITE, "static-server")
    assert authz.service_write("static-server-sidecar-proxy")


def test_a_pod_whose_account_differs_from_its_service_is_denied_that_service() -> None:
    authz = authorizer_for(review("system:serviceaccount:default:static-client"))
    with pytest.raises(PermissionDenied) as caught:
        authz.check("service", Access.WRITE, "static-server")
    assert str(caught.value) == (
        "Permission denied: token with AccessorID 'acc-1' lacks permission 'service:write' on \"static-server\""
    )


def test_a_pod_in_another_namespace_binds_nothing_and_cannot_log_in() -> None:
    with pytest.raises(PermissionDenied):
        authorizer_for(review("system:serviceaccount:prod:static-server"))


def test_the_service_name_annotation_replaces_the_account_name_as_consul_does() -> None:
    from loom.acl.kubernetes import KubernetesLoginRefused, with_service_name

    vars = {
        "serviceaccount.namespace": "ns",
        "serviceaccount.name": "web-sa",
        "serviceaccount.uid": "u",
    }
    annotated = {"kind": "ServiceAccount", "metadata": {"annotations": {SERVICE_NAME: "web"}}}
    assert with_service_name(vars, annotated)["serviceaccount.name"] == "web"
    assert with_service_name(vars, {"kind": "ServiceAccount", "metadata": {}}) == vars
    with pytest.raises(KubernetesLoginRefused, match="did not answer a ServiceAccount"):
        with_service_name(vars, {"kind": "Status"})


SERVICE_NAME = "consul.hashicorp.com/service-name"
