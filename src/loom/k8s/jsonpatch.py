"""RFC 6902 JSON Patch generation: the difference between two JSON documents.

The webhook answers with ``diff(original_pod, injected_pod)``, so the patch is derived from
the planner's output and never written by hand. Objects are compared key by key (removals,
then common keys, then additions, each in sorted order); arrays element by element, extra
elements added at the end or removed from the end (highest index first), so applying the
operations in order always yields ``new``. Values of different JSON types (including ``true``
versus ``1``) are replaced. Keys are escaped per RFC 6901 (``~`` -> ``~0``, ``/`` -> ``~1``).
"""

from __future__ import annotations

import copy
from typing import Any

Operation = dict[str, Any]


def escape(key: str) -> str:
    """One RFC 6901 reference token."""
    return key.replace("~", "~0").replace("/", "~1")


def diff(old: Any, new: Any) -> list[Operation]:
    """Operations that turn ``old`` into ``new`` (empty when they are equal)."""
    ops: list[Operation] = []
    _diff(old, new, "", ops)
    return ops


def _diff(old: Any, new: Any, path: str, ops: list[Operation]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() - new.keys()):
            ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
        for key in sorted(old.keys() & new.keys()):
            _diff(old[key], new[key], f"{path}/{escape(key)}", ops)
        for key in sorted(new.keys() - old.keys()):
            ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": _copy(new[key])})
        return
    if isinstance(old, list) and isinstance(new, list):
        common = min(len(old), len(new))
        for index in range(common):
            _diff(old[index], new[index], f"{path}/{index}", ops)
        for index in range(common, len(new)):
            ops.append({"op": "add", "path": f"{path}/{index}", "value": _copy(new[index])})
        for index in reversed(range(common, len(old))):
            ops.append({"op": "remove", "path": f"{path}/{index}"})
        return
    if type(old) is not type(new) or old != new:
        ops.append({"op": "replace", "path": path, "value": _copy(new)})


def _copy(value: Any) -> Any:
    # Later mutation of the planner's output must not alter an emitted patch.
    return copy.deepcopy(value) if isinstance(value, dict | list) else value
