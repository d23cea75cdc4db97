"""The kept ``/spec`` part of a patch: joined after any ``/metadata`` head, its base64 is
that of the whole patch, whatever the head's length (so whatever bytes it carries over)."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.k8s.admission import compact
from loom.k8s.patch_parts import CARRIES, SpecPart, spec_key

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
