"""``loom inject``: find the pod templates in Kubernetes manifests and inject them.

Reads multi-document YAML (and ``List`` objects), runs every Pod and every pod template of
Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, Jobs and CronJobs
(``spec.jobTemplate.spec.template``) through ``plan_injection``, and passes every other kind
through unchanged. Output is canonical YAML (sorted keys), one document per input document.
The namespace of an object is the ``--namespace`` given, else its ``metadata.namespace``,
else ``default``. Pure apart from parsing text: no files, no network.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from loom.inject import InjectError, InjectSettings, NamespaceInfo, plan_injection
from loom.inject.annotations import ORIGINAL_POD
from loom.inject.lint import mesh_keys, misspelled
from loom.k8s.errors import ManifestError

TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
"""Where each workload kind keeps its pod template."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one pod (template) of the input, for ``--explain``."""

    object: str
    """``Kind/name`` of the object holding the pod."""
    injected: bool
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    """Annotations the injector did not act on: misspelled, or on a workload's own metadata
    instead of its pod template (where the seeds' "common mistake" puts them)."""


def load_documents(text: str) -> list[Any]:
    """All YAML documents of ``text``; a syntax error becomes a one-line ``ManifestError``."""
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"malformed YAML{where}: {problem}") from None


def dump_documents(docs: list[Any]) -> str:
    """Canonical multi-document YAML (sorted keys, block style)."""
    return yaml.safe_dump_all(docs, sort_keys=True, default_flow_style=False, width=1_000_000)


def inject_documents(
    docs: list[Any],
    settings: InjectSettings,
    namespace: str | None = None,
    namespace_labels: Mapping[str, str] | None = None,
) -> tuple[list[Any], list[Outcome]]:
    """Injected copies of ``docs`` and one outcome per pod (template) met."""
    outcomes: list[Outcome] = []

    def one(pod: Mapping[str, Any], obj: Mapping[str, Any], where: str) -> dict[str, Any]:
        ns = namespace or _metadata(obj).get("namespace") or "default"
        info = NamespaceInfo(str(ns), dict(namespace_labels or {}))
        try:
            result = plan_injection(pod, info, settings)
        except InjectError as exc:
            raise ManifestError(f"{where}: {exc}") from exc
        warnings = [*misplaced(obj), *misspelled(_metadata(pod).get("annotations") or {})]
        outcomes.append(Outcome(where, result.inject, result.reasons, tuple(warnings)))
        return result.pod if result.pod is not None else copy.deepcopy(dict(pod))

    return map_pod_templates(docs, one), outcomes


def inject_text(
    text: str,
    settings: InjectSettings,
    namespace: str | None = None,
    namespace_labels: Mapping[str, str] | None = None,
) -> tuple[str, list[Outcome]]:
    """``loom inject`` on text: the injected YAML and the outcomes."""
    docs = [d for d in load_documents(text) if d is not None]
    out, outcomes = inject_documents(docs, settings, namespace, namespace_labels)
    return dump_documents(out), outcomes


def uninject_documents(docs: list[Any]) -> tuple[list[Any], list[Outcome]]:
    """``loom uninject``: every injected pod (template) put back as it was before injection,
    from its ``original-pod`` annotation (its metadata and spec, as the injector stored them);
    pods without one are left as they are. ``Outcome.injected`` says which were restored."""
    outcomes: list[Outcome] = []

    def one(pod: Mapping[str, Any], obj: Mapping[str, Any], where: str) -> dict[str, Any]:
        stored = (_metadata(pod).get("annotations") or {}).get(ORIGINAL_POD)
        if stored is None:
            outcomes.append(Outcome(where, False, (f"no {ORIGINAL_POD} annotation: left as is",)))
            return copy.deepcopy(dict(pod))
        try:
            original = json.loads(stored) if isinstance(stored, str) else None
        except json.JSONDecodeError:
            original = None
        if not isinstance(original, dict):
            raise ManifestError(f"{where}: annotation {ORIGINAL_POD} is not a JSON object")
        restored = {k: copy.deepcopy(v) for k, v in pod.items() if k not in ("status",)}
        restored["metadata"] = original.get("metadata") or {}
        restored["spec"] = original.get("spec") or {}
        outcomes.append(Outcome(where, True, (f"restored from {ORIGINAL_POD}",)))
        return restored

    return map_pod_templates(docs, one), outcomes


def uninject_text(text: str) -> tuple[str, list[Outcome]]:
    """``loom uninject`` on text: the restored YAML and the outcomes."""
    docs = [d for d in load_documents(text) if d is not None]
    out, outcomes = uninject_documents(docs)
    return dump_documents(out), outcomes


def misplaced(obj: Mapping[str, Any]) -> list[str]:
    """A warning when a workload (not a Pod) carries mesh annotations on its own metadata:
    the injector reads only its pod template's."""
    kind = obj.get("kind")
    if kind not in TEMPLATE_PATHS:
        return []
    keys = mesh_keys(_metadata(obj).get("annotations") or {})
    if not keys:
        return []
    where = ".".join((*TEMPLATE_PATHS[str(kind)], "metadata", "annotations"))
    return [
        f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} on the {kind}'s own metadata, "
        f"which the injector does not read: move {'it' if len(keys) == 1 else 'them'} to {where}"
    ]


def pod_templates(doc: Any) -> Iterator[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """Every (``Kind/name``, pod or template, owning object) in a document, Lists unrolled."""
    if not isinstance(doc, Mapping):
        return
    kind = doc.get("kind")
    if kind == "List":
        for item in doc.get("items") or ():
            yield from pod_templates(item)
    elif kind == "Pod":
        yield _name(doc), doc, doc
    elif kind in TEMPLATE_PATHS:
        template = _at(doc, TEMPLATE_PATHS[str(kind)])
        if isinstance(template, Mapping):
            yield _name(doc), template, doc


Injector = Callable[[Mapping[str, Any], Mapping[str, Any], str], dict[str, Any]]
"""Called as ``injector(pod, owning object, "Kind/name")``; returns the new pod (template)."""


def map_pod_templates(docs: list[Any], injector: Injector) -> list[Any]:
    """Copies of ``docs`` with every pod (template) replaced by ``injector``'s result, visited
    in the order of ``pod_templates``; other objects copied unchanged."""
    return [_walk(doc, index, injector) for index, doc in enumerate(docs)]


def _walk(doc: Any, index: int, inject: Injector) -> Any:
    if not isinstance(doc, Mapping):
        raise ManifestError(f"document {index + 1}: expected a Kubernetes object, got {doc!r:.60}")
    kind = doc.get("kind")
    if kind == "List":
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise ManifestError(f"document {index + 1}: List items must be a list")
        out = copy.deepcopy(dict(doc))
        out["items"] = [_walk(item, index, inject) for item in items]
        return out
    if kind == "Pod":
        return inject(doc, doc, _name(doc))
    if kind in TEMPLATE_PATHS:
        path = TEMPLATE_PATHS[str(kind)]
        template = _at(doc, path)
        if not isinstance(template, Mapping):
            raise ManifestError(f"{_name(doc)}: no pod template at {'.'.join(path)}")
        out = copy.deepcopy(dict(doc))
        parent = _at(out, path[:-1])
        parent[path[-1]] = inject(template, doc, _name(doc))
        return out
    return copy.deepcopy(doc)


def _at(doc: Any, path: tuple[str, ...]) -> Any:
    node = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _metadata(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = doc.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _name(doc: Mapping[str, Any]) -> str:
    meta = _metadata(doc)
    return f"{doc.get('kind')}/{meta.get('name') or meta.get('generateName') or '?'}"
