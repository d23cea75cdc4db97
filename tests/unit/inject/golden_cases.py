"""The golden injection cases shared by both front-ends' tests.

Each case is ``tests/golden/inject/<case>.yaml`` (input manifests), an optional
``<case>.options.yaml`` (``values:`` a Helm values document, ``namespaceLabels:`` the labels of
the namespace) and the expected result: ``<case>.injected.yaml`` (what ``loom inject``
prints) or ``<case>.refused.txt`` (the one-line refusal). ``<case>.plan.yaml`` records the
planner's decision and plan per pod. Refresh all with ``pytest --update-golden``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

CASE_DIR = Path(__file__).parents[2] / "golden" / "inject"
K8S_VERSION = "1.30"
SUFFIXES = (".options.yaml", ".injected.yaml", ".refused.txt", ".plan.yaml")


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    values: dict[str, Any] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)


def case_names() -> list[str]:
    return sorted(
        p.name[: -len(".yaml")]
        for p in CASE_DIR.glob("*.yaml")
        if not any(p.name.endswith(s) for s in SUFFIXES)
    )


def load_case(name: str) -> Case:
    options_path = CASE_DIR / f"{name}.options.yaml"
    options = yaml.safe_load(options_path.read_text()) if options_path.exists() else {}
    return Case(
        name,
        (CASE_DIR / f"{name}.yaml").read_text(),
        options.get("values") or {},
        options.get("namespaceLabels") or {},
    )


def validate_manifest(doc: dict[str, Any]) -> None:
    """Validate one object (List items one by one) against the Kubernetes schemas."""
    if doc.get("kind") == "List":
        for item in doc.get("items") or ():
            validate_manifest(item)
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        first = str(exc).splitlines()[0]
        raise AssertionError(
            f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {first}"
        ) from None
