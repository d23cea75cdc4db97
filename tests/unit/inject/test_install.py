from __future__ import annotations

import base64
import datetime

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from loom.cli import main
from loom.k8s.certs import generate_tls, webhook_dns_names
from loom.k8s.install import InstallSettings, render
from loom.k8s.manifests import dump_documents
from loom.k8s.values import parse_values, settings_from
from tests.unit.inject.golden_cases import validate_manifest

VALUES = """
global:
  name: mesh
  namespace: mesh-system
connectInject:
  replicas: 2
  failurePolicy: Ignore
  k8sAllowNamespaces: ['my-ns-1', 'my-ns-2']
  k8sDenyNamespaces: ['no-inject-ns-1']
  certs:
    secretName: injector-tls
    caBundle: Q0EK
"""


def rendered(values_text: str = "", tls=None) -> list[dict]:
    values = parse_values(values_text)
    return render(values, settings_from(values), InstallSettings.from_values(values), tls)


def test_the_default_install_matches_its_golden_file_and_the_schemas(golden) -> None:
    docs = rendered()
    for doc in docs:
        validate_manifest(doc)
    golden.check("inject/install/default.yaml", dump_documents(docs))


def test_values_shape_names_selectors_policy_and_ca_bundle(golden) -> None:
    docs = rendered(VALUES)
    for doc in docs:
        validate_manifest(doc)
    golden.check("inject/install/values.yaml", dump_documents(docs))
    [config] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    hook = config["webhooks"][0]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["clientConfig"]["caBundle"] == "Q0EK"
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", "kube-public", "no-inject-ns-1"],
        },
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["my-ns-1", "my-ns-2"]},
    ]
    deployment, controller = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == "mesh-system"
    assert controller["metadata"]["name"] == "mesh-endpoints-controller"
    assert deployment["spec"]["replicas"] == 2
    # The webhook reads back the very values it was installed with.
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert yaml.safe_load(config_map["data"]["values.yaml"]) == parse_values(VALUES)


def test_generated_certificates_cover_the_service_and_are_signed_by_the_bundle() -> None:
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    tls = generate_tls("loom-connect-injector", "loom", now)
    docs = rendered(tls=tls)
    for doc in docs:
        validate_manifest(doc)
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    [config] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(
        base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"])
    )
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == webhook_dns_names(
        "loom-connect-injector", "loom"
    )
    assert "loom-connect-injector.loom.svc" in sans.get_values_for_type(x509.DNSName)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert "annotations" not in config["metadata"]


def test_loom_install_prints_valid_manifests_and_rejects_bad_values(tmp_path, capsys) -> None:
    assert main(["install", "--generate-certs"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == [
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "Secret", "Service", "Deployment",
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",  # the controller
        "MutatingWebhookConfiguration",
    ]  # fmt: skip
    for doc in docs:
        validate_manifest(doc)
    values = tmp_path / "values.yaml"
    values.write_text("connectInject:\n  failurePolicy: Sometimes\n")
    assert main(["install", "--values", str(values)]) == 2
    assert capsys.readouterr().err == (
        "loom: connectInject.failurePolicy: 'Sometimes' is not Fail or Ignore\n"
    )
