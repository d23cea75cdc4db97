"""RFC 6902 JSON Patch generation: the difference between two JSON documents.

The webhook answers with ``diff(original_pod, injected_pod)``, so the patch is derived from
the planner's output and never written by hand. Objects are compared key by key (removals,
then common keys, then additions, each in sorted order); arrays element by element, extra
elements added at the end or removed from the end (highest index first), so applying the
operations in order always yields ``new``. Values of different JSON types (including ``true``
versus ``1``) are replaced. Keys are escaped per RFC 6901 (``~`` -> ``~0``, ``/`` -> ``~1``).
The ``value`` of an operation is the very object found in ``new`` (not a copy): serialise the
patch before changing ``new``.
"""

from __future__ import annotations

from typing import Any

Operation = dict[str, Any]
_MISSING = object()


_ESCAPED: dict[str, str] = {}
"""Tokens of keys that need escaping, by key: the same few (``consul.hashicorp.com/...``)
come in every patch. At most ``ESCAPED_KEPT``."""
ESCAPED_KEPT = 1024


def escape(key: str) -> str:
    """One RFC 6901 reference token."""
    if "/" not in key and "~" not in key:
        return key
    token = _ESCAPED.get(key)
    if token is None:
        token = key.replace("~", "~0").replace("/", "~1")
        if len(_ESCAPED) >= ESCAPED_KEPT:
            _ESCAPED.clear()
        _ESCAPED[key] = token
    return token


def diff(old: Any, new: Any, path: str = "") -> list[Operation]:
    """Operations that turn ``old`` into ``new`` (empty when they are equal); ``path``: where
    ``old`` is in the document patched (a JSON pointer), the prefix of the operations' paths."""
    ops: list[Operation] = []
    _diff(old, new, path, ops)
    return ops


def _diff(old: Any, new: Any, path: str, ops: list[Operation]) -> None:
    if old is new:
        return
    old_type, new_type = type(old), type(new)
    if old_type is dict and new_type is dict:
        # Only the keys that differ are sorted: shared sub-objects (most of a pod the planner
        # left alone) are unchanged, skipped by identity without a call or a sort.
        get, missing = new.get, _MISSING
        changed = [key for key, before in old.items() if get(key, missing) is not before]
        removed = 0
        if changed:
            if len(changed) > 1:
                changed.sort()
            for key in changed:  # removals first, then the keys both have, each sorted
                if key not in new:
                    removed += 1
                    ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
            for key in changed:
                if key in new:
                    _diff(old[key], new[key], f"{path}/{escape(key)}", ops)
        if len(new) > len(old) - removed:  # some keys of new are not in old
            added = [key for key in new if key not in old]
            if len(added) > 1:
                added.sort()
            for key in added:
                ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": new[key]})
        return
    if old_type is list and new_type is list:
        common = min(len(old), len(new))
        for index in range(common):
            if old[index] is not new[index]:
                _diff(old[index], new[index], f"{path}/{index}", ops)
        for index in range(common, len(new)):
            ops.append({"op": "add", "path": f"{path}/{index}", "value": new[index]})
        for index in reversed(range(common, len(old))):
            ops.append({"op": "remove", "path": f"{path}/{index}"})
        return
    if old_type is not new_type or old != new:
        ops.append({"op": "replace", "path": path, "value": new})
