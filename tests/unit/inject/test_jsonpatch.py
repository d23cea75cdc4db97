from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.k8s.jsonpatch import _ESCAPED, ESCAPED_KEPT, diff, escape
from tests.unit.inject.jsonpatch_apply import apply_patch

KEYS = st.sampled_from(["a", "b", "a/b", "~", "~1", "", "metadata", "x~/y"])
SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(0, 2) | st.text(max_size=3)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)


def same(a: object, b: object) -> bool:
    # json text comparison tells true from 1 and 1 from 1.0.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=150, deadline=None)
@given(JSON, JSON)
def test_applying_the_diff_to_the_old_document_gives_the_new_one(old, new) -> None:
    assert same(apply_patch(old, diff(old, new)), new)


@settings(max_examples=40, deadline=None)
@given(JSON)
def test_equal_documents_have_an_empty_diff(doc) -> None:
    assert diff(doc, json.loads(json.dumps(doc))) == []


def test_keys_with_slash_and_tilde_are_escaped() -> None:
    assert escape("consul.hashicorp.com/connect-inject") == "consul.hashicorp.com~1connect-inject"
    assert escape("a~/b") == "a~0~1b"
    old = {"metadata": {"annotations": {"x": "1"}}}
    new = {"metadata": {"annotations": {"x": "1", "consul.hashicorp.com/a~b": "2"}}}
    ops = diff(old, new)
    assert [op["path"] for op in ops] == ["/metadata/annotations/consul.hashicorp.com~1a~0b"]
    assert apply_patch(old, ops) == new


def test_escaped_keys_kept_for_the_next_patch_stay_bounded_and_right() -> None:
    keys = [f"k{n}/~{n}" for n in range(ESCAPED_KEPT + 10)]
    for key in keys + keys:
        assert escape(key) == key.replace("~", "~0").replace("/", "~1")
    assert len(_ESCAPED) <= ESCAPED_KEPT
    assert escape("plain") == "plain" and "plain" not in _ESCAPED


def test_a_boolean_replacing_a_number_is_a_replace() -> None:
    assert diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]


def test_a_shrinking_list_is_cut_from_the_end() -> None:
    ops = diff([1, 2, 3, 4], [1, 9])
    assert apply_patch([1, 2, 3, 4], ops) == [1, 9]
    assert [op["path"] for op in ops if op["op"] == "remove"] == ["/3", "/2"]
