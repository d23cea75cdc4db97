"""Warnings about ``consul.hashicorp.com/`` annotations the injector will not act on.

A misspelled key (``conect-service``) is not an error Kubernetes reports, and the injector
reads only the keys it knows, so the pod would be injected as if the annotation were not
there. ``misspelled`` names each such key and the nearest annotation Loom reads. Pure: the
front-ends (``loom inject``, the webhook) decide where the warnings go.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from loom.inject import annotations as ann

READ = ann.READ
WRITTEN = ann.WRITTEN


def mesh_keys(annotations: Mapping[str, object]) -> list[str]:
    """The ``consul.hashicorp.com/`` keys among ``annotations``, sorted."""
    return sorted(k for k in annotations if isinstance(k, str) and k.startswith(ann.PREFIX))


def nearest(key: str, known: Iterable[str] = READ) -> str | None:
    """The known annotation closest to ``key``, if one is close."""
    found = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
    return found[0] if found else None


def misspelled(annotations: Mapping[str, object]) -> list[str]:
    """One warning per ``consul.hashicorp.com/`` key the injector does not know."""
    out = []
    for key in mesh_keys(annotations):
        if key in READ or key in WRITTEN or key.startswith(ann.SERVICE_META_PREFIX):
            continue
        near = nearest(key)
        hint = f" (did you mean {near}?)" if near else ""
        out.append(f"annotation {key} is not one Loom reads and is ignored{hint}")
    return out
