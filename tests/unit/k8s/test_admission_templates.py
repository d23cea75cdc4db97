"""The webhook's template cache (issue 17): pods that agree on what the planner reads (their
annotations and containers) share its decision, plan and injected containers, and every pod
still gets, byte for byte, the answer the uncached planner gives it; the fast body reader and
the fast ``original-pod`` text are the standard ones' exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.domain.fields import ValidationError, check_json_text
from loom.inject import InjectSettings, NamespaceInfo, plan_injection
from loom.inject.injection import plan_template
from loom.inject.metadata import original_pod_json
from loom.k8s.admission import API_VERSION, MalformedReview, PlanCache, _load, review

SETTINGS = InjectSettings()
FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
A = "consul.hashicorp.com/"


def _body(pod: Any, uid: str = "u-1", namespace: str = "default") -> bytes:
    request = {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
               "operation": "CREATE", "namespace": namespace, "object": pod}  # fmt: skip
    review_doc = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}
    return json.dumps(review_doc).encode()


ANNOTATIONS = st.dictionaries(
    st.sampled_from([
        A + "connect-inject", A + "connect-service", A + "connect-service-port",
        A + "connect-service-upstreams", A + "transparent-proxy", A + "service-tags",
        A + "transparent-proxy-overwrite-probes", A + "transparent-proxy-exclude-inbound-ports",
        A + "enable-metrics", A + "sidecar-proxy-cpu-limit", A + "service-meta-team",
        A + "envoy-extra-args", A + "connect-inject-status", A + "conect-inject", "other/x",
    ]),
    st.sampled_from(["true", "false", "web", "web,api", "8080", "http", "db:5432", "a,b",
                     "9090", "100m", "x", "--log-level debug", "", "injected"]),
    max_size=5,
)  # fmt: skip
COMMON = [
    {A + "connect-inject": "true"},
    {A + "connect-inject": "true", A + "transparent-proxy-overwrite-probes": "true"},
    {A + "connect-inject": "true", A + "connect-service-upstreams": "db:5432"},
]
"""Annotations many templates share, so that templates differing in containers alone meet."""
PROBE = st.fixed_dictionaries(
    {"httpGet": st.fixed_dictionaries({"port": st.sampled_from([8080, "http", "nope"]),
                                       "path": st.sampled_from(["/", "/ready"])})}
)  # fmt: skip
CONTAINER = st.fixed_dictionaries(
    {"name": st.sampled_from(["web", "api", "loom-dataplane"]), "image": st.just("busybox")},
    optional={
        "ports": st.lists(st.fixed_dictionaries({"containerPort": st.sampled_from([8080, 9090]),
                                                 "name": st.sampled_from(["http", "grpc"])}),
                          max_size=2),
        "readinessProbe": PROBE,
        "env": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["DB_CONNECT_SERVICE_HOST",
                                                                        "X"]),
                                               "value": st.just("1")}), max_size=2),
    },
)  # fmt: skip
TEMPLATE = st.fixed_dictionaries(
    # Kubernetes refuses two containers of one name (and the planner does not handle them).
    {"annotations": st.sampled_from(COMMON) | ANNOTATIONS,
     "containers": st.lists(CONTAINER, min_size=1, max_size=2, unique_by=lambda c: c["name"])}
)  # fmt: skip
# What the planner copies verbatim: names, labels (absent, empty, or with one it writes).
VERBATIM = st.fixed_dictionaries({}, optional={
    "name": st.text(max_size=5),
    "generateName": st.sampled_from(["web-5d8f7c-", "web-\u00e9-"]),
    "labels": st.dictionaries(st.sampled_from(["app", "serial", A + "connect-inject-status"]),
                              st.text(max_size=4), max_size=3),
    "initContainers": st.lists(st.fixed_dictionaries({"name": st.sampled_from(
        ["setup", "loom-connect-init"]), "image": st.just("busybox")}), max_size=1),
    "volumes": st.lists(st.fixed_dictionaries({"name": st.sampled_from(
        ["data", "loom-connect-inject-data"]), "emptyDir": st.just({})}), max_size=1),
})  # fmt: skip


def _pod(template: dict[str, Any], verbatim: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in verbatim.items() if k in ("name", "generateName", "labels")}
    spec = {k: v for k, v in verbatim.items() if k in ("initContainers", "volumes")}
    metadata["annotations"] = template["annotations"]
    return {"metadata": metadata, "spec": {**spec, "containers": template["containers"]}}


@FUZZ
@given(
    st.lists(TEMPLATE, min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 2), VERBATIM, st.sampled_from(["default", "apps"])),
             min_size=1, max_size=8),
    st.sampled_from([SETTINGS, replace(SETTINGS, default_inject=True)]),
)  # fmt: skip
def test_every_pod_gets_the_uncached_planners_answer_whatever_template_it_shares(
    templates: list[dict[str, Any]],
    pods: list[tuple[int, dict[str, Any], str]],
    inject: InjectSettings,
) -> None:
    cache = PlanCache(entries=2)
    labels = {"apps": {A + "transparent-proxy": "false"}}
    for index, verbatim, namespace in pods:
        # And a sibling (another name): a pod of the same template meeting its kept spec part.
        for pod in (verbatim, {**verbatim, "name": verbatim.get("name", "") + "-1"}):
            body = _body(_pod(templates[index % len(templates)], pod), namespace=namespace)
            cached = review(body, inject, lambda ns: labels.get(ns, {}), cache)
            plain = review(body, inject, lambda ns: labels.get(ns, {}))
            assert cached.wire() == plain.wire()
            assert (cached.outcome, cached.message) == (plain.outcome, plain.message)


def test_pods_differing_only_in_labels_and_names_are_planned_once_and_patched_each() -> None:
    cache = PlanCache()
    template = {"annotations": {A + "connect-inject": "true"},
                "containers": [{"name": "web", "ports": [{"containerPort": 8080}]}]}  # fmt: skip
    answers = []
    for serial in range(3):
        verbatim = {"generateName": "web-", "labels": {"app": "web", "serial": str(serial)}}
        body = _body(_pod(template, verbatim), uid=str(serial))
        answers.append(review(body, SETTINGS, lambda _: {}, cache))
        assert answers[-1].wire() == review(body, SETTINGS, lambda _: {}).wire()
    assert (cache.template_hits, cache.template_misses) == (2, 1)
    assert (cache.spec_hits, cache.spec_misses) == (2, 1)  # one /spec part for all three
    assert (cache.hits, cache.misses) == (0, 3)  # each pod is its own patch
    assert len({a.body["response"]["patch"] for a in answers}) == 3


def test_pods_of_one_template_with_other_volumes_or_init_containers_get_their_own_spec_part() -> None:
    cache = PlanCache()
    template = {"annotations": {A + "connect-inject": "true"}, "containers": [{"name": "web"}]}
    spec_inputs = [{}, {"volumes": []}, {"volumes": [{"name": "data", "emptyDir": {}}]},
                   {"initContainers": []}, {"initContainers": [{"name": "setup"}]}]  # fmt: skip
    claims = [{"volumes": [{"name": f"claim-{n}", "emptyDir": {}}]} for n in range(12)]
    expected = [(0, 5), (5, 5), (5, 17), (5, 22)]  # (hits, misses) after each round
    for serial, pods in enumerate([spec_inputs, spec_inputs, claims, spec_inputs]):
        for verbatim in pods:  # a label per round: no pod is answered from the pod cache
            body = _body(_pod(template, {**verbatim, "labels": {"serial": str(serial)}}))
            cached = review(body, SETTINGS, lambda _: {}, cache)
            assert cached.wire() == review(body, SETTINGS, lambda _: {}).wire()
        assert (cache.spec_hits, cache.spec_misses) == expected[serial]
    assert (cache.template_misses, cache.hits) == (1, 0)


@pytest.mark.parametrize("metadata", [
    {}, {"labels": {"app": "web"}}, {"annotations": {}}, {"annotations": None, "labels": None},
    {"annotations": {A + "transparent-proxy-status": "x"},  # replaced, and left as it is:
     "labels": {A + "connect-inject-status": "x", A + "connect-inject-managed-by": "loom-k8s-controller"}},
    {"annotations": {}, "labels": {}, "name": "web-0", "uid": "1"},
])  # fmt: skip
def test_pods_without_annotations_or_labels_get_the_uncached_answer_each_time(
    metadata: dict[str, Any],
) -> None:
    inject = replace(SETTINGS, default_inject=True)
    cache = PlanCache()
    for serial in range(3):
        pod = {"metadata": {**metadata, "generateName": f"w{serial}-"},
               "spec": {"containers": [{"name": "web"}]}}  # fmt: skip
        body = _body(pod)
        assert review(body, inject, lambda _: {}, cache).wire() == review(
            body, inject, lambda _: {}
        ).wire()
    assert cache.spec_hits == 2


def test_a_pod_with_other_containers_or_annotations_gets_a_template_of_its_own() -> None:
    cache = PlanCache()
    template = {"annotations": {A + "connect-inject": "true"},
                "containers": [{"name": "web", "ports": [{"containerPort": 8080}]}]}  # fmt: skip
    other_port = {**template, "containers": [{"name": "web", "ports": [{"containerPort": 9090}]}]}
    other_tags = {**template, "annotations": {**template["annotations"], A + "service-tags": "a"}}
    for each in (template, other_port, other_tags):
        review(_body(_pod(each, {})), SETTINGS, lambda _: {}, cache)
    assert (cache.template_hits, cache.template_misses) == (0, 3)


def test_results_made_from_one_template_share_nothing_unless_asked_to() -> None:
    pod = _pod({"annotations": {A + "connect-inject": "true"},
                "containers": [{"name": "web"}]}, {})  # fmt: skip
    namespace = NamespaceInfo("default", {})
    template = plan_template(pod, namespace, SETTINGS)
    first = plan_injection(pod, namespace, SETTINGS, template=template)
    second = plan_injection(pod, namespace, SETTINGS, template=template)
    assert first.pod is not None and second.pod is not None
    first.pod["spec"]["containers"][-1]["args"].append("--changed")
    assert second.pod == plan_injection(pod, namespace, SETTINGS).pod
    assert "--changed" not in template.added[0][1]["args"]


JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(JSON_TEXT, st.booleans(), st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_the_fast_body_reader_reads_what_json_loads_reads(
    doc: Any, ascii_only: bool, encoding: str
) -> None:
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")
    got, plain = _load(raw)
    expected = json.loads(raw)
    assert json.dumps(got) == json.dumps(expected)  # NaN != NaN: compare the texts
    assert plain == (not _has_float(expected))


def _has_float(doc: Any) -> bool:
    if isinstance(doc, dict):
        return any(_has_float(v) for v in doc.values())
    if isinstance(doc, list):
        return any(_has_float(v) for v in doc)
    return isinstance(doc, float)


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=4), JSON_TEXT, max_size=4),
       st.dictionaries(st.text(max_size=4), JSON_TEXT, max_size=4))  # fmt: skip
def test_the_fast_original_pod_text_is_the_standard_one_for_plain_pods(
    metadata: dict[str, Any], spec: dict[str, Any]
) -> None:
    pod = {"metadata": metadata, "spec": spec}
    _, plain = _load(json.dumps(pod).encode())
    assert original_pod_json(pod, plain) == original_pod_json(pod)


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("value", [
    "\ud800", {"k\udc00": 1}, _nested(62, 1), _nested(70, 1), {"deep": _nested(80, [])},
    float("nan"), "\u00e9 plain",
])  # fmt: skip
@pytest.mark.parametrize("ascii_only", [True, False])
def test_a_review_either_reader_takes_is_refused_naming_the_place_the_full_check_names(
    value: Any, ascii_only: bool
) -> None:
    pod = _pod({"annotations": {}, "containers": [{"name": "web", "odd": value}]}, {})
    body = json.dumps(json.loads(_body(pod)), ensure_ascii=ascii_only)
    raw = body.encode("utf-8", "surrogatepass")
    request = json.loads(raw)["request"]
    try:
        check_json_text(request, "request")
    except ValidationError as exc:
        expected = str(exc)
    else:
        expected = ""
    try:
        review(raw, SETTINGS, lambda _: {}, PlanCache())
    except MalformedReview as exc:
        assert str(exc) == expected
    else:
        assert expected == ""
