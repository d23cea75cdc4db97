"""`loom inject` over every golden case: output, refusal line, plan, schema validity."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from loom.cli import main
from loom.inject import InjectError, NamespaceInfo, plan_injection
from loom.k8s.manifests import load_documents, pod_templates
from loom.k8s.values import settings_from
from loom.redirect import RedirectConfig
from tests.unit.inject.golden_cases import CASE_DIR, case_names, load_case, validate_manifest

CASES = case_names()


def run_loom_inject(case_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    case = load_case(case_name)
    argv = ["inject", "-f", str(CASE_DIR / f"{case_name}.yaml")]
    if case.values:
        values = tmp_path / "values.yaml"
        values.write_text(yaml.safe_dump(case.values))
        argv += ["--values", str(values)]
    for key, value in case.namespace_labels.items():
        argv += ["--namespace-labels", f"{key}={value}"]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case_name", CASES)
def test_loom_inject_output_matches_the_golden_file(case_name, tmp_path, capsys, golden) -> None:
    code, out, err = run_loom_inject(case_name, tmp_path, capsys)
    injected = CASE_DIR / f"{case_name}.injected.yaml"
    refused = CASE_DIR / f"{case_name}.refused.txt"
    warned = CASE_DIR / f"{case_name}.warnings.txt"
    if code == 0:
        if err or warned.exists():  # warnings only: annotations the injector does not act on
            assert all(line.startswith("loom: warning: ") for line in err.splitlines()), err
            golden.check(f"inject/{case_name}.warnings.txt", err)
        assert not refused.exists(), f"stale {refused.name}: the case is now injected"
        golden.check(f"inject/{case_name}.injected.yaml", out)
    else:
        assert code == 1 and out == ""
        assert err.startswith("loom: ") and err.count("\n") == 1, err
        assert not injected.exists(), f"stale {injected.name}: the case is now refused"
        assert "consul.hashicorp.com/" in err, "a refusal names the annotation"
        golden.check(f"inject/{case_name}.refused.txt", err)


@pytest.mark.parametrize("case_name", [c for c in CASES if not c.startswith("refused-")])
def test_every_injected_manifest_is_valid_for_kubernetes(case_name, tmp_path, capsys) -> None:
    code, out, _ = run_loom_inject(case_name, tmp_path, capsys)
    assert code == 0
    for doc in yaml.safe_load_all(out):
        validate_manifest(doc)


def plan_document(case_name: str) -> list[dict[str, Any]]:
    case = load_case(case_name)
    settings = settings_from(case.values)
    out = []
    for doc in load_documents(case.text):
        for where, pod, owner in pod_templates(doc):
            ns = (owner.get("metadata") or {}).get("namespace") or "default"
            info = NamespaceInfo(ns, case.namespace_labels)
            try:
                result = plan_injection(pod, info, settings)
            except InjectError as exc:
                out.append({"object": where, "refused": str(exc)})
                continue
            plan = dataclasses.asdict(result.plan) if result.plan else None
            out.append(
                {
                    "object": where,
                    "inject": result.inject,
                    "reasons": list(result.reasons),
                    "plan": plan,
                }
            )
    return out


@pytest.mark.parametrize("case_name", CASES)
def test_the_plan_of_each_case_matches_the_golden_file(case_name, golden) -> None:
    text = yaml.safe_dump(plan_document(case_name), sort_keys=True, width=1_000_000)
    golden.check(f"inject/{case_name}.plan.yaml", text)


@pytest.mark.parametrize("case_name", [c for c in CASES if not c.startswith("refused-")])
def test_each_init_containers_flags_parse_back_to_the_plans_redirect_config(case_name) -> None:
    case = load_case(case_name)
    settings = settings_from(case.values)
    for doc in load_documents(case.text):
        for _, pod, owner in pod_templates(doc):
            ns = (owner.get("metadata") or {}).get("namespace") or "default"
            result = plan_injection(pod, NamespaceInfo(ns, case.namespace_labels), settings)
            if result.plan is None:
                continue
            for init in result.pod["spec"]["initContainers"]:
                if init["command"] != ["loom", "k8s", "connect-init"]:
                    continue
                args = init["args"]
                if result.plan.redirect is None:
                    assert "--" not in args
                else:
                    flags = args[args.index("--") + 1 :]
                    assert RedirectConfig.from_flags(flags) == result.plan.redirect


@pytest.mark.parametrize("case_name", [c for c in CASES if not c.startswith("refused-")])
def test_loom_uninject_gives_back_every_golden_case_as_it_was(case_name, tmp_path, capsys) -> None:
    injected = CASE_DIR / f"{case_name}.injected.yaml"
    assert main(["uninject", "-f", str(injected)]) == 0
    restored = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d is not None]
    original = load_documents((CASE_DIR / f"{case_name}.yaml").read_text())
    assert restored == [d for d in original if d is not None]
