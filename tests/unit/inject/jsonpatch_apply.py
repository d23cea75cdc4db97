"""An RFC 6902 applier written for the tests only (add, remove, replace), independent of
``loom.k8s.jsonpatch``: patches are checked by applying them, never by their text."""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    pass


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"bad pointer {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"bad array index {token!r}")
    index = int(token)
    limit = len(container) if for_add else len(container) - 1
    if index > limit:
        raise PatchError(f"index {index} out of range")
    return index


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        tokens = _tokens(op["path"])
        kind = op["op"]
        if not tokens:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
                continue
            raise PatchError("cannot remove the root")
        parent = doc
        for token in tokens[:-1]:
            if isinstance(parent, list):
                parent = parent[_index(parent, token, False)]
            elif isinstance(parent, dict):
                if token not in parent:
                    raise PatchError(f"missing {token!r} in {op['path']}")
                parent = parent[token]
            else:
                raise PatchError(f"cannot descend into a scalar at {op['path']}")
        last = tokens[-1]
        if isinstance(parent, list):
            if kind == "add":
                parent.insert(_index(parent, last, True), copy.deepcopy(op["value"]))
            elif kind == "remove":
                del parent[_index(parent, last, False)]
            elif kind == "replace":
                parent[_index(parent, last, False)] = copy.deepcopy(op["value"])
            else:
                raise PatchError(f"unsupported op {kind}")
        elif isinstance(parent, dict):
            if kind == "add":
                parent[last] = copy.deepcopy(op["value"])
            elif kind in ("remove", "replace"):
                if last not in parent:
                    raise PatchError(f"{kind} of missing {op['path']}")
                if kind == "remove":
                    del parent[last]
                else:
                    parent[last] = copy.deepcopy(op["value"])
            else:
                raise PatchError(f"unsupported op {kind}")
        else:
            raise PatchError(f"parent of {op['path']} is a scalar")
    return doc
