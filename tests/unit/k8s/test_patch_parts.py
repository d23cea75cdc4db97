"""The kept parts of a patch. ``/spec``: joined after any ``/metadata`` head, its base64 is
that of the whole patch, whatever the head's length (so whatever bytes it carries over).
``/metadata``: the text around ``original-pod``'s value, with the labels' operations, is the
text of ``diff``'s operations, whatever annotations and labels the pod already has."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.inject import InjectSettings, NamespaceInfo
from loom.inject.injection import inject_metadata, plan_template
from loom.k8s.jsonpatch import diff
from loom.k8s.patch_parts import CARRIES, PLACEHOLDER, MetadataPart, SpecPart, compact, spec_key

A = "consul.hashicorp.com/"

OPS = st.lists(
    st.fixed_dictionaries({"op": st.sampled_from(["add", "replace", "remove"]),
                           "path": st.text("abc/~", max_size=6)},
                          optional={"value": st.text(max_size=7) | st.integers()}),
    max_size=3,
)  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(OPS, min_size=1, max_size=6), OPS)
def test_the_base64_of_head_then_part_is_that_of_the_whole_patch(
    heads: list[list[dict[str, Any]]], ops: list[dict[str, Any]]
) -> None:
    part = SpecPart(compact(ops))
    for head in heads + heads:  # the second time, each end is the one kept
        assert part.encode_after(compact(head)) == base64.b64encode(compact(head + ops))
    assert len(part.encoded) <= CARRIES


def test_spec_keys_tell_a_missing_field_from_an_empty_or_null_one() -> None:
    specs = [{}, {"volumes": []}, {"volumes": None}, {"initContainers": []}, {"volumes": [{}]}]
    assert len({spec_key(spec) for spec in specs}) == len(specs)
    assert spec_key({"volumes": [], "restartPolicy": "Never"}) == spec_key({"volumes": []})
    assert spec_key({"volumes": ["\ud800"]}) is None


PLAN_ANNOTATIONS = [
    {A + "connect-inject": "true"},
    {A + "connect-inject": "true", A + "transparent-proxy": "false", A + "enable-metrics": "true"},
]
TEXT = st.sampled_from(
    ["injected", "enabled", "loom-k8s-controller", "x", "\u00e9", "", PLACEHOLDER]
)
VALUE = TEXT | st.integers(-2, 2) | st.none() | st.booleans() | st.lists(TEXT, max_size=1)
KEYS = st.sampled_from(
    [
        A + "connect-inject-status",
        A + "original-pod",
        A + "transparent-proxy-status",
        A + "connect-inject-managed-by",
        "prometheus.io/scrape",
        "app",
        "\u00e9",
    ]
)
METADATA = st.fixed_dictionaries(
    {"annotations": st.dictionaries(KEYS, VALUE, max_size=4)},
    optional={"labels": st.dictionaries(KEYS, VALUE, max_size=4) | st.none(), "name": TEXT},
)  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(PLAN_ANNOTATIONS), METADATA)
def test_the_kept_metadata_part_gives_the_text_of_the_diffs_operations(
    plan_annotations: dict[str, str], metadata: dict[str, Any]
) -> None:
    template = {"metadata": {"annotations": plan_annotations},
                "spec": {"containers": [{"name": "web", "image": "busybox"}]}}  # fmt: skip
    plan = plan_template(template, NamespaceInfo("default", {}), InjectSettings()).plan
    assert plan is not None
    pod = {**template, "metadata": metadata}
    part = MetadataPart.of(metadata["annotations"], plan)
    if metadata["annotations"].get(A + "original-pod") == PLACEHOLDER:
        assert part is None  # the one value it cannot tell from its placeholder
        return
    assert part is not None
    head = part.head(pod)
    if type(metadata.get("labels")) is not dict:
        assert head is None  # diff adds or replaces the whole of labels: not the part's
        return
    injected = inject_metadata(pod, plan, True)
    ops = diff(metadata["annotations"], injected["annotations"], "/metadata/annotations")
    ops += diff(metadata["labels"], injected["labels"], "/metadata/labels")
    assert head == compact(ops)


def test_no_metadata_part_is_kept_for_annotations_that_are_not_an_object() -> None:
    template = {"metadata": {"annotations": PLAN_ANNOTATIONS[0]},
                "spec": {"containers": [{"name": "web", "image": "busybox"}]}}  # fmt: skip
    plan = plan_template(template, NamespaceInfo("default", {}), InjectSettings()).plan
    assert plan is not None
    assert MetadataPart.of(None, plan) is None
    assert MetadataPart.of(["x"], plan) is None
