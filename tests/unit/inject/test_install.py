from __future__ import annotations

import base64
import datetime

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from loom.cli import main
from loom.inject import SettingsError
from loom.k8s.certs import generate_tls, webhook_dns_names
from loom.k8s.install import AclTokens, InstallSettings, TlsMaterial, render, with_install_defaults
from loom.k8s.install_server import ServerSettings
from loom.k8s.install_tls import with_ca_pem
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


TOKENS = AclTokens(
    management="11111111-2222-4333-8444-555555555555",
    controller="66666666-7777-4888-8999-000000000000",
)


SERVER_TLS = TlsMaterial(b"SERVER CERT\n", b"SERVER KEY\n", b"SERVER CA\n")
"""Stands for the server's certificate (the renderer only base64-encodes it)."""


def rendered(values_text: str = "", tls=None) -> list[dict]:
    """The install of these values with ``loom install``'s defaults (ACLs managed, TLS on)."""
    values = parse_values(values_text)
    install = InstallSettings.from_values(values)
    inject = settings_from(with_install_defaults(values))
    server = inject.server_ca.enabled and ServerSettings.from_values(values).enabled
    tokens = TOKENS if install.manage_acls else None
    return render(values, inject, install, tls, tokens, SERVER_TLS if server else None)


def named(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


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
        {
            "key": "pod-security.kubernetes.io/enforce",
            "operator": "NotIn",
            "values": ["baseline", "restricted"],
        },
    ]
    deployment, controller = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == "mesh-system"
    assert controller["metadata"]["name"] == "mesh-endpoints-controller"
    assert deployment["spec"]["replicas"] == 2
    # The webhook reads back the very values it was installed with (and the CA's PEM, which
    # it hands injected pods as CONSUL_CACERT_PEM).
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert yaml.safe_load(config_map["data"]["values.yaml"]) == with_ca_pem(
        with_install_defaults(parse_values(VALUES)), SERVER_TLS
    )


def test_generated_certificates_cover_the_service_and_are_signed_by_the_bundle() -> None:
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    tls = generate_tls("loom-connect-injector", "loom", now)
    docs = rendered(tls=tls)
    for doc in docs:
        validate_manifest(doc)
    secret = named(docs, "Secret", "loom-connect-injector-tls")
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


def test_namespaces_enforcing_a_pod_security_level_are_routed_to_a_path_naming_it() -> None:
    [config] = [d for d in rendered() if d["kind"] == "MutatingWebhookConfiguration"]
    routes = {
        h["name"]: (
            h["clientConfig"]["service"]["path"],
            h["namespaceSelector"]["matchExpressions"][-1],
        )
        for h in config["webhooks"]
    }
    enforce = "pod-security.kubernetes.io/enforce"
    assert routes == {
        "loom-connect-injector.loom.mesh": (
            "/mutate",
            {"key": enforce, "operator": "NotIn", "values": ["baseline", "restricted"]},
        ),
        "loom-connect-injector-baseline.loom.mesh": (
            "/mutate/pod-security/baseline",
            {"key": enforce, "operator": "In", "values": ["baseline"]},
        ),
        "loom-connect-injector-restricted.loom.mesh": (
            "/mutate/pod-security/restricted",
            {"key": enforce, "operator": "In", "values": ["restricted"]},
        ),
    }


def test_a_webhook_url_is_the_client_config_and_its_ip_is_in_the_generated_certificate() -> None:
    values = "connectInject:\n  webhookUrl: https://127.0.0.1:8443\n"
    install = InstallSettings.from_values(parse_values(values))
    assert install.webhook_host == "127.0.0.1"
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    tls = generate_tls(install.webhook_name, install.namespace, now, (install.webhook_host,))
    docs = rendered(values, tls=tls)
    [config] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    for doc in docs:
        validate_manifest(doc)
    assert [h["clientConfig"]["url"] for h in config["webhooks"]] == [
        "https://127.0.0.1:8443/mutate",
        "https://127.0.0.1:8443/mutate/pod-security/baseline",
        "https://127.0.0.1:8443/mutate/pod-security/restricted",
    ]
    assert all("service" not in h["clientConfig"] for h in config["webhooks"])
    cert = x509.load_pem_x509_certificate(tls.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    with pytest.raises(SettingsError, match=r"connectInject\.webhookUrl: 'http://x' is not https"):
        InstallSettings.from_values(parse_values("connectInject:\n  webhookUrl: http://x\n"))


def test_without_a_certificate_the_webhook_manages_its_own_unless_cert_manager_is_asked() -> None:
    docs = rendered()
    [config] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    assert "annotations" not in config["metadata"]
    assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])
    webhook = named(docs, "Deployment", "loom-connect-injector")["spec"]["template"]["spec"]
    args = webhook["containers"][0]["args"]
    assert "--webhook-config=loom-connect-injector" in args and "--cert-dir=/run/loom/tls" in args
    assert not [a for a in args if a.startswith("--tls-")]
    assert {"name": "tls", "emptyDir": {"medium": "Memory"}} in webhook["volumes"]
    role = named(docs, "ClusterRole", "loom-connect-injector")
    assert role["rules"][-1] == {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations"],
        "resourceNames": ["loom-connect-injector"],
        "verbs": ["get", "update"],
    }
    docs = rendered("connectInject:\n  certs:\n    certManager: true\n")
    [config] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    assert config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "loom/loom-connect-injector"
    }
    assert len(named(docs, "ClusterRole", "loom-connect-injector")["rules"]) == 1


def test_loom_install_prints_valid_manifests_and_rejects_bad_values(tmp_path, capsys) -> None:
    assert main(["install", "--generate-certs"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == [
        "Namespace", *["CustomResourceDefinition"] * 4,
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "Secret", "Secret",  # the server's CA and certificate (TLS on by default)
        "Secret", "Service", "Deployment",
        "Secret", "Secret", "ServiceAccount", "Secret", "ClusterRole",  # ACLs
        "ClusterRoleBinding", "ClusterRoleBinding", "Job",
        "Service", "Service", "Service", "StatefulSet",  # the server: API, headless, DNS
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding",  # the controller
        "Role", "RoleBinding", "Deployment",  # its leader-election Lease
        "MutatingWebhookConfiguration",
    ]  # fmt: skip
    tokens = {
        base64.b64decode(d["data"]["token"]).decode()
        for d in docs
        if d["kind"] == "Secret" and d["type"] == "Opaque" and "token" in d["data"]
    }
    assert len(tokens) == 2  # fresh UUIDs: the management and the controller tokens
    for doc in docs:
        validate_manifest(doc)
    values = tmp_path / "values.yaml"
    values.write_text("connectInject:\n  failurePolicy: Sometimes\n")
    assert main(["install", "--values", str(values)]) == 2
    assert capsys.readouterr().err == (
        "loom: connectInject.failurePolicy: 'Sometimes' is not Fail or Ignore\n"
    )


def test_acls_are_managed_by_default_and_injected_pods_log_in() -> None:
    docs = rendered()
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    webhook_values = yaml.safe_load(config_map["data"]["values.yaml"])
    assert webhook_values["global"]["acls"] == {"manageSystemACLs": True}
    assert settings_from(webhook_values).login.auth_method == "loom-k8s-auth-method"
    for name, token in (("loom-bootstrap-acl-token", TOKENS.management),
                        ("loom-controller-acl-token", TOKENS.controller)):  # fmt: skip
        secret = named(docs, "Secret", name)
        assert base64.b64decode(secret["data"]["token"]).decode() == token


def test_the_reviewer_may_review_tokens_and_read_service_accounts_only() -> None:
    docs = rendered()
    bindings = {
        d["roleRef"]["name"]: d["subjects"]
        for d in docs
        if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"].startswith("loom-auth")
    }
    reviewer = [{"kind": "ServiceAccount", "name": "loom-auth-method", "namespace": "loom"}]
    assert bindings == {"system:auth-delegator": reviewer, "loom-auth-method": reviewer}
    role = named(docs, "ClusterRole", "loom-auth-method")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}
    ]
    token = named(docs, "Secret", "loom-auth-method")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "loom-auth-method"
    }


def test_the_job_and_the_controller_read_only_secrets_the_install_renders() -> None:
    docs = rendered()
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    job = named(docs, "Job", "loom-acl-init")
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "OnFailure"
    [container] = pod["containers"]
    assert container["command"] == ["loom", "k8s", "acl-init"]
    assert "--auth-method-name=loom-k8s-auth-method" in container["args"]
    used = {v["secret"]["secretName"] for v in pod["volumes"]}
    assert used == {
        "loom-bootstrap-acl-token",
        "loom-auth-method",
        "loom-controller-acl-token",
        "loom-ca-cert",
    }
    assert used <= secrets
    assert "--ca-file=/etc/loom/server-ca/tls.crt" in container["args"]
    ca_volume = next(v for v in pod["volumes"] if v["name"] == "server-ca")
    assert ca_volume["secret"]["secretName"] == "loom-ca-cert" and "loom-ca-cert" in secrets
    controller = named(docs, "Deployment", "loom-endpoints-controller")["spec"]["template"]["spec"]
    [ctr] = controller["containers"]
    assert ctr["env"][-1] == {"name": "LOOM_HTTP_TOKEN_FILE", "value": "/etc/loom/acl/token"}
    assert {v["secret"]["secretName"] for v in controller["volumes"] if "secret" in v} == {
        "loom-controller-acl-token",
        "loom-ca-cert",
    }
    webhook = named(docs, "Deployment", "loom-connect-injector")["spec"]["template"]["spec"]
    assert "env" not in webhook["containers"][0]  # the webhook never calls the server
    hook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")["webhooks"][0]
    assert "acl-init" in hook["objectSelector"]["matchExpressions"][0]["values"]


def test_manage_system_acls_false_renders_the_install_without_acls() -> None:
    docs = rendered("global:\n  acls:\n    manageSystemACLs: false\n")
    for doc in docs:
        validate_manifest(doc)
    assert not [d for d in docs if d["kind"] == "Job"]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"} == {
        "loom-ca-cert",
        "loom-server-cert",
    }
    controller = named(docs, "Deployment", "loom-endpoints-controller")
    env = controller["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["POD_NAME", "POD_NAMESPACE"]
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert (
        settings_from(yaml.safe_load(config_map["data"]["values.yaml"])).login.auth_method is None
    )


def test_the_server_is_a_stateful_set_on_sqlite_with_a_claim_and_its_services() -> None:
    docs = rendered("server:\n  storage: 1Gi\n  storageClass: fast\n")
    for doc in docs:
        validate_manifest(doc)
    server = named(docs, "StatefulSet", "loom-server")
    spec = server["spec"]
    assert spec["replicas"] == 1 and spec["serviceName"] == "loom-server-headless"
    [claim] = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    container, dns = spec["template"]["spec"]["containers"]
    assert "--data-dir=/var/lib/loom" in container["args"]
    assert "--acl-initial-management-token=$(LOOM_BOOTSTRAP_TOKEN)" in container["args"]
    [token] = [e for e in container["env"] if e["name"] == "LOOM_BOOTSTRAP_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["name"] == "loom-bootstrap-acl-token"
    assert dns["command"] == ["loom", "dns-proxy"]
    ports = {p["name"]: p["port"] for p in named(docs, "Service", "loom-server")["spec"]["ports"]}
    assert ports == {"https": 8501, "grpc-tls": 8503}  # what server.httpAddr/grpcAddr name
    assert {p["protocol"] for p in named(docs, "Service", "loom-dns")["spec"]["ports"]} == {
        "UDP",
        "TCP",
    }


def test_etcd_endpoints_give_three_servers_without_volumes_and_sqlite_refuses_several() -> None:
    docs = rendered("server:\n  etcdEndpoints: ['10.0.0.1:2379', '10.0.0.2:2379']\n")
    spec = named(docs, "StatefulSet", "loom-server")["spec"]
    assert spec["replicas"] == 3 and "volumeClaimTemplates" not in spec
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert "--etcd-endpoints=10.0.0.1:2379,10.0.0.2:2379" in args
    with pytest.raises(SettingsError, match="cannot share one SQLite file"):
        rendered("server:\n  replicas: 3\n")
    docs = rendered("server:\n  enabled: false\n")
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
