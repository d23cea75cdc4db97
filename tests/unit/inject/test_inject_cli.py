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


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {consul.hashicorp.com/connect-inject: 'true'}
spec:
  template:
    metadata:
      annotations: {consul.hashicorp.com/conect-service: web, consul.hashicorp.com/x-y: z}
    spec:
      containers: [{name: app, image: busybox}]
"""


def test_explain_says_why_a_deployment_annotated_on_the_wrong_metadata_is_not_injected(
    tmp_path, capsys
) -> None:
    path = tmp_path / "dep.yaml"
    path.write_text(DEPLOYMENT)
    assert main(["inject", "-f", str(path), "--explain"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "Deployment/web: not injected: no consul.hashicorp.com/connect-inject annotation and "
        "connectInject.default is false",
        "loom: warning: Deployment/web: consul.hashicorp.com/connect-inject is on the "
        "Deployment's own metadata, which the injector does not read: move it to "
        "spec.template.metadata.annotations",
        "loom: warning: Deployment/web: annotation consul.hashicorp.com/conect-service is not "
        "one Loom reads and is ignored (did you mean consul.hashicorp.com/connect-service?)",
        "loom: warning: Deployment/web: annotation consul.hashicorp.com/x-y is not one Loom "
        "reads and is ignored",
    ]


def test_a_misspelled_annotation_on_an_injected_pod_is_a_warning_not_a_refusal(capsys) -> None:
    pod = POD.replace("annotations: {", "annotations: {consul.hashicorp.com/service-tag: a, ")
    proc = subprocess.run([sys.executable, "-m", "loom", "inject", "-f", "-"], input=pod,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0
    assert proc.stderr == (
        "loom: warning: Pod/p: annotation consul.hashicorp.com/service-tag is not one Loom reads "
        "and is ignored (did you mean consul.hashicorp.com/service-tags?)\n"
    )
    assert "loom-dataplane" in proc.stdout


def test_uninject_leaves_a_pod_that_was_never_injected_as_it_is(tmp_path, capsys) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(POD)
    assert main(["uninject", "-f", str(path), "--explain"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out) == yaml.safe_load(POD)
    assert err == "Pod/p: unchanged: no consul.hashicorp.com/original-pod annotation: left as is\n"
