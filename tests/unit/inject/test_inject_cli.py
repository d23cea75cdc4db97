from __future__ import annotations

import subprocess
import sys

import yaml

from loom.cli import main

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {consul.hashicorp.com/connect-inject: 'true'}
spec:
  containers: [{name: app, image: busybox}]
"""


def test_loom_inject_reads_stdin_and_explains_its_decision() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loom", "inject", "-f", "-", "--explain"],
        input=POD,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    pod = yaml.safe_load(proc.stdout)
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["app", "loom-dataplane"]
    assert proc.stderr.startswith("Pod/p: injected: annotation consul.hashicorp.com/connect-inject")


def test_malformed_yaml_is_one_clear_line(tmp_path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Pod\nmetadata: {name: [\n")
    assert main(["inject", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("loom: malformed YAML at line") and err.count("\n") == 1


def test_a_document_that_is_not_an_object_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert main(["inject", "-f", str(path)]) == 1
    assert "document 1: expected a Kubernetes object" in capsys.readouterr().err


def test_a_missing_file_and_bad_flags_are_one_line_errors(tmp_path, capsys) -> None:
    assert main(["inject", "-f", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read: No such file" in capsys.readouterr().err
    path = tmp_path / "pod.yaml"
    path.write_text(POD)
    assert main(["inject", "-f", str(path), "--namespace-labels", "novalue"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    values = tmp_path / "values.yaml"
    values.write_text("connectInject:\n  default: maybe\n")
    assert main(["inject", "-f", str(path), "--values", str(values)]) == 2
    assert "connectInject.default: expected a boolean" in capsys.readouterr().err


def test_the_namespace_flag_overrides_metadata_namespace(tmp_path, capsys) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(POD.replace("name: p\n", "name: p\n  namespace: kube-system\n"))
    assert main(["inject", "-f", str(path)]) == 0
    assert "loom-dataplane" not in capsys.readouterr().out
    assert main(["inject", "-f", str(path), "--namespace", "apps"]) == 0
    assert "loom-dataplane" in capsys.readouterr().out
