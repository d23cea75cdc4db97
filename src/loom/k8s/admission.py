"""AdmissionReview in, AdmissionReview out: the webhook's decisions, without the server.

``review(body, settings, namespace_labels)`` parses an ``admission.k8s.io/v1`` review, runs the
pod through ``plan_injection`` and builds the response: a JSONPatch (the diff of the original
and injected pod) when injected; ``allowed: true`` without a patch when not to inject;
``allowed: false`` with the refusal (naming the annotation and value) when the planner
refuses. A body that cannot be answered raises ``MalformedReview`` naming the problem (bad
JSON, nesting deeper than ``MAX_JSON_DEPTH``, a lone UTF-16 surrogate, a field of the wrong
type, no ``request.uid``...); ``malformed_answer`` turns it into a denial (``allowed: false``,
code 400) that carries the request's uid when one could be read. This is the one place that
maps planner errors to wire responses. Pure: labels come in as an argument.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loom.domain.fields import MAX_JSON_DEPTH, ValidationError, check_json_text
from loom.inject import InjectError, InjectSettings, NamespaceInfo, plan_injection
from loom.k8s.errors import K8sError
from loom.k8s.jsonpatch import diff

API_VERSION = "admission.k8s.io/v1"

_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
"""Compact JSON for patches (the operations hold no cycles: skip the check on the hot path)."""

MAX_MESSAGE = 300
"""Characters of a malformed review's message kept (it may quote the review's keys)."""

POD_SECURITY_PATH = "/mutate/pod-security/"
"""Reviews of pods in namespaces enforcing a PodSecurity level: the API server sends no
namespace labels, so ``loom install`` routes those namespaces here by ``namespaceSelector``
(``/mutate/pod-security/baseline`` or ``.../restricted``) and the webhook adds the level as
the ``pod-security.kubernetes.io/enforce`` label."""

NamespaceLabels = Callable[[str], Mapping[str, str]]
"""Labels of a namespace by name (from the webhook's cache)."""


class MalformedReview(K8sError):
    """The request body is not an AdmissionReview the webhook can answer.

    ``uid`` is the request's uid when it could be read (the answer is then a denial the API
    server matches to its request), else empty (the body was not a review at all).
    """

    def __init__(self, message: str, uid: str = "") -> None:
        # A path can name keys of any length: keep the message (and the log line) short.
        super().__init__(message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "...")
        self.uid = uid


@dataclass(frozen=True)
class Answer:
    """The response document and the outcome for metrics and logs."""

    body: dict[str, Any]
    outcome: str
    """``injected``, ``skipped`` or ``refused`` (see ``metrics.OUTCOMES``)."""
    message: str


def parse_review(body: bytes) -> dict[str, Any]:
    """The review's ``request``; raises ``MalformedReview`` naming what is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedReview(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise MalformedReview(f"body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(doc, dict):
        raise MalformedReview("body is not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview":
        raise MalformedReview(f"expected kind AdmissionReview, apiVersion {API_VERSION}")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("request: missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid: missing or not a string")
    try:
        check_json_text(uid, "request.uid")
    except ValidationError as exc:
        raise MalformedReview(str(exc)) from None
    try:
        check_json_text(request, "request")
    except ValidationError as exc:
        raise MalformedReview(str(exc), uid) from None
    return request


def review(body: bytes, settings: InjectSettings, namespace_labels: NamespaceLabels) -> Answer:
    """Answer one review (see the module docstring)."""
    request = parse_review(body)
    uid = request["uid"]
    kind = request.get("kind")
    pod = request.get("object")
    if not isinstance(kind, dict) or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        return _allow(uid, "skipped", f"not a Pod ({kind!r})")
    if request.get("operation", "CREATE") != "CREATE":
        return _allow(uid, "skipped", f"operation {request.get('operation')} is not CREATE")
    if not isinstance(pod, dict):
        raise MalformedReview("request.object: missing or not an object", uid)
    namespace = _namespace(request, pod)
    labels = _labels(request) or namespace_labels(namespace)
    try:
        result = plan_injection(
            pod, NamespaceInfo(namespace, labels), settings, share_unchanged=True
        )
    except InjectError as exc:
        return Answer(
            _response(uid, allowed=False, status={"code": 400, "message": str(exc)}),
            "refused",
            str(exc),
        )
    if not result.inject or result.pod is None:
        return _allow(uid, "skipped", "; ".join(result.reasons))
    patch = _ENCODER.encode(diff(pod, result.pod)).encode()
    body_out = _response(
        uid, allowed=True, patchType="JSONPatch", patch=base64.b64encode(patch).decode()
    )
    return Answer(body_out, "injected", "; ".join(result.reasons))


def malformed_answer(exc: MalformedReview) -> dict[str, Any]:
    """The denial for a review that cannot be answered: code 400 and what is wrong."""
    return _response(exc.uid, allowed=False, status={"code": 400, "message": str(exc)})


def error_answer(body: bytes, message: str) -> dict[str, Any]:
    """A denial for an unexpected internal error (the uid echoed when it can be read)."""
    try:
        uid = json.loads(body)["request"]["uid"]
    except Exception:
        uid = ""
    return _response(uid, allowed=False, status={"code": 500, "message": message})


def _namespace(request: Mapping[str, Any], pod: Mapping[str, Any]) -> str:
    ns = request.get("namespace")
    if not ns:
        metadata = pod.get("metadata")
        ns = metadata.get("namespace") if isinstance(metadata, dict) else None
    return str(ns or "default")


def _labels(request: Mapping[str, Any]) -> dict[str, str] | None:
    # Not sent by kube-apiserver to webhooks today; honoured when a caller includes it.
    ns_object = request.get("namespaceObject")
    if isinstance(ns_object, dict):
        labels = (ns_object.get("metadata") or {}).get("labels")
        if isinstance(labels, dict):
            return {str(k): str(v) for k, v in labels.items()}
    return None


def _allow(uid: str, outcome: str, message: str) -> Answer:
    return Answer(_response(uid, allowed=True), outcome, message)


def _response(uid: str, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, **fields},
    }
