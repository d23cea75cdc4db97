"""Hostile AdmissionReviews: whatever the body, ``review`` answers it or refuses it as a
``MalformedReview`` naming the problem (with the request's uid when one can be read), never
with any other exception: a bug would be a 500 "internal error" denial (issue 11)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.inject import InjectSettings
from loom.k8s.admission import API_VERSION, MalformedReview, malformed_answer, review

SETTINGS = InjectSettings()
FUZZ = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _review(request: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}


def _pod_request(pod: Any, uid: Any = "u-1") -> dict[str, Any]:
    return {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": "default", "object": pod}  # fmt: skip


INJECTED = {
    "metadata": {"annotations": {"consul.hashicorp.com/connect-inject": "true"}},
    "spec": {"containers": [{"name": "app", "image": "busybox"}]},
}


def _refusal(body: bytes) -> MalformedReview:
    with pytest.raises(MalformedReview) as caught:
        review(body, SETTINGS, lambda _: {})
    return caught.value


@pytest.mark.parametrize(("body", "uid", "message"), [
    (b"{not json", "", "body is not JSON: Expecting property name"),
    (b"\xff\xfe", "", "body is not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "", "body: nested deeper than 64 levels"),
    (b"[]", "", "body is not a JSON object"),
    (json.dumps({"kind": "Pod"}).encode(), "", "expected kind AdmissionReview"),
    (json.dumps(_review(None)).encode(), "", "request: missing or not an object"),
    (json.dumps(_review({"object": {}})).encode(), "", "request.uid: missing or not a string"),
    (json.dumps(_review({"uid": 7})).encode(), "", "request.uid: missing or not a string"),
    (json.dumps(_review({"uid": "\ud800"})).encode(), "",
     "request.uid: contains a lone UTF-16 surrogate"),
    (json.dumps(_review(_pod_request({**INJECTED, "spec": {"containers": [{"name": "\udc00"}]}})))
     .encode(), "u-1", "request.object.spec.containers[0].name: contains a lone UTF-16 surrogate"),
    (json.dumps(_review(_pod_request({"metadata": {"labels": {"\ud800": "x"}}}))).encode(), "u-1",
     "request.object.metadata.labels: a key contains a lone UTF-16 surrogate"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u-1",'
     b' "object": {"metadata": ' + b"[" * 200 + b"]" * 200 + b"}}}", "u-1",
     "request.object.metadata[0][0]"),
    (json.dumps(_review(_pod_request([1, 2]))).encode(), "u-1",
     "request.object: missing or not an object"),
])  # fmt: skip
def test_a_malformed_review_is_refused_naming_the_problem_with_its_uid(
    body: bytes, uid: str, message: str
) -> None:
    refused = _refusal(body)
    assert refused.uid == uid
    assert message in str(refused)
    answer = malformed_answer(refused)["response"]
    assert answer == {
        "uid": uid,
        "allowed": False,
        "status": {"code": 400, "message": str(refused)},
    }


def test_a_message_quoting_a_huge_key_is_kept_short() -> None:
    pod = {"metadata": {"labels": {"k" * 100_000: {"x": "\ud800"}}}}
    refused = _refusal(json.dumps(_review(_pod_request(pod))).encode())
    assert refused.uid == "u-1" and len(str(refused)) < 400


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["true", "false", "\ud800", "web:1234", "é", ""])
)  # fmt: skip
KEYS = st.sampled_from([
    "metadata", "spec", "containers", "initContainers", "annotations", "labels", "name",
    "namespace", "ports", "containerPort", "image", "volumes", "securityContext", "env",
    "readinessProbe", "livenessProbe", "httpGet", "port", "path", "serviceAccountName",
    "consul.hashicorp.com/connect-inject", "consul.hashicorp.com/connect-service-upstreams",
    "consul.hashicorp.com/transparent-proxy", "consul.hashicorp.com/connect-service",
    "consul.hashicorp.com/connect-service-port", "consul.hashicorp.com/enable-metrics",
]) | st.text(max_size=4)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=24,
)
annotations = st.dictionaries(
    st.sampled_from(
        [
            "consul.hashicorp.com/connect-inject",
            "consul.hashicorp.com/connect-service-upstreams",
            "consul.hashicorp.com/transparent-proxy",
            "consul.hashicorp.com/connect-service-port",
            "consul.hashicorp.com/transparent-proxy-exclude-inbound-ports",
        ]
    ),
    st.sampled_from(["true", "false", "web:1234", "8080", "http", "a,b", ""]) | values,
)
containers = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["app", "sidecar"]) | values},
        optional={"image": values, "ports": values, "readinessProbe": values, "env": values},
    ),
    max_size=3,
)
pods = st.fixed_dictionaries(
    {"metadata": st.fixed_dictionaries({"annotations": annotations | values},
                                       optional={"name": values, "labels": values}),
     "spec": st.fixed_dictionaries({"containers": containers | values},
                                   optional={"initContainers": values, "volumes": values})},
) | values  # fmt: skip
requests = st.fixed_dictionaries(
    {"uid": st.just("u-1") | values, "object": pods},
    optional={"kind": st.just({"group": "", "version": "v1", "kind": "Pod"}) | values,
              "operation": st.sampled_from(["CREATE", "UPDATE"]) | values,
              "namespace": values, "namespaceObject": values},
)  # fmt: skip
reviews = st.fixed_dictionaries(
    {"apiVersion": st.just(API_VERSION) | values, "kind": st.just("AdmissionReview") | values,
     "request": requests | values},
) | values  # fmt: skip


@FUZZ
@given(reviews)
def test_any_review_is_answered_or_refused_as_malformed_never_an_internal_error(doc: Any) -> None:
    body = json.dumps(doc).encode()
    try:
        answer = review(body, SETTINGS, lambda _: {})
    except MalformedReview as exc:
        out = malformed_answer(exc)
        assert out["response"]["allowed"] is False
        assert out["response"]["status"]["code"] == 400
    else:
        out = answer.body
        assert out["response"]["uid"] == doc["request"]["uid"]
        if "patch" in out["response"]:
            json.loads(base64.b64decode(out["response"]["patch"]))
    json.dumps(out).encode("ascii")  # what the webhook writes


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_are_refused_as_malformed_or_answered(body: bytes) -> None:
    try:
        review(body, SETTINGS, lambda _: {})
    except MalformedReview as exc:
        assert str(exc)


def test_a_misspelled_annotation_comes_back_as_a_warning_kubectl_shows() -> None:
    pod = {**INJECTED, "metadata": {"annotations": {
        **INJECTED["metadata"]["annotations"], "consul.hashicorp.com/conect-service": "web"}}}  # fmt: skip
    answer = review(json.dumps(_review(_pod_request(pod))).encode(), SETTINGS, lambda _: {})
    assert answer.outcome == "injected"
    assert answer.body["response"]["warnings"] == [
        "annotation consul.hashicorp.com/conect-service is not one Loom reads and is ignored "
        "(did you mean consul.hashicorp.com/connect-service?)"
    ]
    clean = review(json.dumps(_review(_pod_request(INJECTED))).encode(), SETTINGS, lambda _: {})
    assert "warnings" not in clean.body["response"]
