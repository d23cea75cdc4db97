"""The webhook's fast path (issue 17): the response as sent is the answer's JSON byte for byte,
a pod template seen before gets the same patch with its own uid, and the quick body check
refuses exactly what the full one refuses, naming the same place."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.domain.fields import ValidationError, check_json_body, check_json_text
from loom.inject import InjectSettings
from loom.k8s.admission import API_VERSION, PlanCache, _load, compact, review

SETTINGS = InjectSettings()
FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _body(pod: Any, uid: str = "u-1", kind: str = "Pod") -> bytes:
    request = {"uid": uid, "kind": {"group": "", "version": "v1", "kind": kind},
               "operation": "CREATE", "namespace": "default", "object": pod}  # fmt: skip
    return json.dumps({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request})\
        .encode()  # fmt: skip


def _pod(app: str = "web", inject: str = "true") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app},
                     "annotations": {"consul.hashicorp.com/connect-inject": inject}},
        "spec": {"containers": [{"name": app, "image": "busybox",
                                 "ports": [{"containerPort": 8080}]}]},
    }  # fmt: skip


def _compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest.mark.parametrize(("body", "outcome"), [
    (_body(_pod()), "injected"),
    (_body(_pod(inject="false")), "skipped"),
    (_body(_pod(), kind="Service"), "skipped"),
    (_body({**_pod(), "metadata": {"annotations": {
        "consul.hashicorp.com/connect-inject": "true",
        "consul.hashicorp.com/transparent-proxy-exclude-inbound-ports": "x"}}}), "refused"),
    (_body(_pod(), uid='quote " and \\ and \u00e9'), "injected"),
])  # fmt: skip
def test_the_response_sent_is_the_answers_compact_json_byte_for_byte(
    body: bytes, outcome: str
) -> None:
    for cache in (None, PlanCache()):
        answer = review(body, SETTINGS, lambda _: {}, cache)
        assert answer.outcome == outcome
        assert answer.wire() == _compact(answer.body)
        assert json.loads(answer.wire()) == answer.body


def test_a_pod_template_seen_before_gets_the_same_patch_with_its_own_uid() -> None:
    cache = PlanCache()
    first = review(_body(_pod(), uid="a"), SETTINGS, lambda _: {}, cache)
    second = review(_body(_pod(), uid="b"), SETTINGS, lambda _: {}, cache)
    plain = review(_body(_pod(), uid="b"), SETTINGS, lambda _: {})
    assert (cache.hits, cache.misses) == (1, 1)
    assert second.body == plain.body and second.wire() == plain.wire()
    assert first.body["response"]["uid"] == "a" and second.body["response"]["uid"] == "b"
    assert first.body["response"]["patch"] == second.body["response"]["patch"]
    ops = json.loads(base64.b64decode(second.body["response"]["patch"]))
    assert any(op["path"] == "/spec/initContainers" for op in ops)


def test_a_different_pod_namespace_label_or_setting_is_planned_anew() -> None:
    cache = PlanCache()
    review(_body(_pod()), SETTINGS, lambda _: {}, cache)
    other = review(_body(_pod(app="api")), SETTINGS, lambda _: {}, cache)
    assert other.wire() == review(_body(_pod(app="api")), SETTINGS, lambda _: {}).wire()
    labels = {"consul.hashicorp.com/transparent-proxy": "false"}
    no_tproxy = review(_body(_pod()), SETTINGS, lambda _: labels, cache)
    assert no_tproxy.wire() == review(_body(_pod()), SETTINGS, lambda _: labels).wire()
    assert no_tproxy.body["response"]["patch"] != other.body["response"]["patch"]
    assert (cache.hits, cache.misses, len(cache)) == (0, 3, 3)
    changed = replace(SETTINGS, default_inject=True)
    review(_body(_pod()), changed, lambda _: {}, cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 4, 1)


def test_the_cache_keeps_the_most_recently_used_templates_only() -> None:
    cache = PlanCache(entries=2)
    for app in ("a", "b", "a", "c", "a", "b"):
        review(_body(_pod(app=app)), SETTINGS, lambda _: {}, cache)
    # a, b miss; a hits; c misses and drops b; a hits; b misses again (dropped).
    assert (cache.hits, cache.misses, len(cache)) == (2, 4, 2)


def test_a_pod_larger_than_the_cap_is_answered_but_not_kept() -> None:
    cache = PlanCache(max_pod_bytes=100)
    for _ in range(2):
        answer = review(_body(_pod()), SETTINGS, lambda _: {}, cache)
        assert answer.outcome == "injected"
    assert (cache.hits, len(cache)) == (0, 0)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=20,
)  # fmt: skip


def _outcome(check: Any, *args: Any) -> str:
    try:
        check(*args)
    except ValidationError as exc:
        return str(exc)
    return "ok"


@FUZZ
@given(JSON, st.integers(0, 70), st.sampled_from(["utf-8", "utf-16", "utf-32-le"]))
def test_the_quick_body_check_refuses_what_the_full_check_refuses_naming_the_same_place(
    value: Any, depth: int, encoding: str
) -> None:
    for _ in range(depth):
        value = [value]
    text = json.dumps(value, ensure_ascii=encoding != "utf-8")
    raw = text.encode(encoding, "surrogatepass")
    decoded = json.loads(raw)
    assert _outcome(check_json_body, raw, decoded, "body") == _outcome(
        check_json_text, decoded, "body"
    )


@pytest.mark.parametrize("raw", [
    b'{"a":"\\ud800"}', b'{"\\uDC00":1}', '{"a":"\ud800"}'.encode("utf-8", "surrogatepass"),
    '{"a":"\udfff"}'.encode("utf-16-le", "surrogatepass"), b"[" * 65 + b"]" * 65,
])  # fmt: skip
def test_a_body_with_a_lone_surrogate_or_too_deep_is_refused_by_the_quick_check(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        check_json_body(raw, json.loads(raw))


JSON_WITH_FLOATS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=20,
)  # fmt: skip


@FUZZ
@given(JSON_WITH_FLOATS)
def test_compact_json_is_the_standard_encoders_byte_for_byte_whatever_the_document(
    doc: Any,
) -> None:
    text = json.dumps(doc, separators=(",", ":"))
    _, plain = _load(text.encode())
    assert compact(doc, plain) == text.encode()


@pytest.mark.parametrize("doc", [
    {"a": 1e16}, [float("nan")], {"x": [0.5, -0.0]}, {"é": "ü"}, ["\x7f"], {"k": "\ud800"},
    {"big": 2**70}, {"ok": ["plain", 1, True, None]},
])  # fmt: skip
def test_floats_non_ascii_and_odd_strings_take_the_standard_encoder_where_msgspec_differs(
    doc: Any,
) -> None:
    text = json.dumps(doc, separators=(",", ":"))
    _, plain = _load(text.encode("utf-8", "surrogatepass"))
    assert plain is not any(isinstance(v, float) for v in _leaves(doc))
    assert compact(doc, plain) == text.encode()


def _leaves(doc: Any) -> list[Any]:
    if isinstance(doc, dict):
        return [leaf for value in doc.values() for leaf in _leaves(value)]
    if isinstance(doc, list):
        return [leaf for value in doc for leaf in _leaves(value)]
    return [doc]


def test_a_pod_holding_nan_is_not_taken_for_the_same_pod_holding_null() -> None:
    # msgspec writes NaN as null: a cache key made by it would confuse the two pods.
    cache = PlanCache()
    with_null, with_nan = _pod(), _pod()
    with_null["spec"]["containers"][0]["weight"] = None
    with_nan["spec"]["containers"][0]["weight"] = float("nan")
    first = review(_body(with_null), SETTINGS, lambda _: {}, cache)
    second = review(_body(with_nan), SETTINGS, lambda _: {}, cache)
    assert (cache.hits, cache.misses) == (0, 2)
    assert first.body["response"]["patch"] != second.body["response"]["patch"]
