"""``loom install``'s TLS on the control plane: on by default, the server's certificate
generated or given, every client of the server on https with the CA, ``--tls=false`` back to
plain 8500/8502, and nothing that skips verification."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from loom.cli import main
from loom.inject import SettingsError
from loom.k8s.certs import generate_server_tls, generate_tls
from loom.k8s.install import AclTokens, InstallSettings, TlsMaterial, render, with_install_defaults
from loom.k8s.values import parse_values, settings_from
from tests.unit.inject.golden_cases import validate_manifest

TOKENS = AclTokens("11111111-2222-4333-8444-555555555555", "66666666-7777-4888-8999-000000000000")
NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def install_cli(capsys, *args: str) -> list[dict]:
    assert main(["install", *args]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def named(docs: list[dict], kind: str, name: str) -> dict:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def secret_bytes(docs: list[dict], name: str, key: str) -> bytes:
    return base64.b64decode(named(docs, "Secret", name)["data"][key])


def server_container(docs: list[dict], index: int = 0) -> dict:
    sts = named(docs, "StatefulSet", "loom-server")
    return sts["spec"]["template"]["spec"]["containers"][index]


def test_the_generated_server_certificate_carries_every_client_name_and_its_ca_signed_it(
    capsys,
) -> None:
    docs = install_cli(capsys)
    for doc in docs:
        validate_manifest(doc)
    ca = x509.load_pem_x509_certificate(secret_bytes(docs, "loom-ca-cert", "tls.crt"))
    cert = x509.load_pem_x509_certificate(secret_bytes(docs, "loom-server-cert", "tls.crt"))
    cert.verify_directly_issued_by(ca)
    assert secret_bytes(docs, "loom-server-cert", "ca.crt") == secret_bytes(
        docs, "loom-ca-cert", "tls.crt"
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"loom-server.loom.svc", "loom-server.loom.svc.cluster.local",
            "*.loom-server-headless.loom.svc", "server.dc1.consul",
            "localhost"} <= set(sans.get_values_for_type(x509.DNSName))  # fmt: skip
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert named(docs, "Secret", "loom-server-cert")["type"] == "kubernetes.io/tls"
    # A second run makes a new CA: no key is kept anywhere to sign with later.
    again = install_cli(capsys)
    assert secret_bytes(again, "loom-ca-cert", "tls.crt") != secret_bytes(
        docs, "loom-ca-cert", "tls.crt"
    )
    assert not [d for d in docs if d["kind"] == "Secret" and "ca.key" in d.get("data", {})]


def test_every_client_of_the_server_speaks_https_and_verifies_with_the_ca(capsys) -> None:
    docs = install_cli(capsys)
    server = server_container(docs)
    assert [p["containerPort"] for p in server["ports"]] == [8501, 8503]
    assert server["readinessProbe"]["httpGet"] == {
        "path": "/v1/status/leader", "port": 8501, "scheme": "HTTPS"
    }  # fmt: skip
    dns = server_container(docs, 1)
    assert dns["args"][0] == "--server=https://127.0.0.1:8501"
    assert dns["env"] == [{"name": "CONSUL_CACERT", "value": "/etc/loom/server-ca/tls.crt"}]
    for kind, name in (("Deployment", "loom-endpoints-controller"), ("Job", "loom-acl-init")):
        pod = named(docs, kind, name)["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        assert "--http-addr=https://loom-server.loom.svc:8501" in args
        assert "--ca-file=/etc/loom/server-ca/tls.crt" in args
        [volume] = [v for v in pod["volumes"] if v["name"] == "server-ca"]
        assert volume["secret"] == {
            "secretName": "loom-ca-cert", "items": [{"key": "tls.crt", "path": "tls.crt"}]
        }  # fmt: skip
    # Nothing but the server mounts its key.
    holders = [d["metadata"]["name"] for d in docs
               if d["kind"] in ("Deployment", "Job", "StatefulSet")
               and "loom-server-cert" in yaml.safe_dump(d)]  # fmt: skip
    assert holders == ["loom-server"]
    text = yaml.safe_dump_all([d for d in docs if d["kind"] != "CustomResourceDefinition"]).lower()
    assert "insecure" not in text and "skipverify" not in text and "skip-verify" not in text


def test_injected_pods_in_any_namespace_get_the_ca_pem_and_https_addresses_from_the_values(
    capsys, tmp_path: Path
) -> None:
    docs = install_cli(capsys)
    values = tmp_path / "values.yaml"
    values.write_text(
        named(docs, "ConfigMap", "loom-connect-injector-values")["data"]["values.yaml"]
    )
    the_ca = secret_bytes(docs, "loom-ca-cert", "tls.crt").decode()
    pod = tmp_path / "pod.yaml"
    pod.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "far-away",
                     "annotations": {"consul.hashicorp.com/connect-inject": "true"}},
        "spec": {"serviceAccountName": "web",
                 "containers": [{"name": "web", "image": "web", "ports": [{"containerPort": 80}]}]},
    }))  # fmt: skip
    assert main(["inject", "-f", str(pod), "--values", str(values)]) == 0
    injected = yaml.safe_load(capsys.readouterr().out)
    spec = injected["spec"]
    [init] = [c for c in spec["initContainers"] if c["name"] == "loom-connect-init"]
    sidecar = next(c for c in spec["containers"] if c["name"] != "web")
    for container in (init, sidecar):
        joined = " ".join([*container.get("command", []), *container.get("args", [])])
        assert "https://loom-server.loom.svc:850" in joined
        assert "loom-server.loom.svc:8500" not in joined and ":8502" not in joined
        assert "--ca-file" not in joined
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["CONSUL_CACERT_PEM"] == the_ca
        assert x509.load_pem_x509_certificate(the_ca.encode())
    # No Secret of the pod's namespace is needed: nothing mounts one.
    assert not [v for v in spec["volumes"] if "secret" in v]


def test_tls_false_renders_plain_8500_and_8502_without_ca_secrets(capsys) -> None:
    docs = install_cli(capsys, "--tls=false")
    server = server_container(docs)
    assert "--http-addr=0.0.0.0:8500" in server["args"] and "--no-http" not in server["args"]
    assert [p["containerPort"] for p in server["ports"]] == [8500, 8502]
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    assert not secrets & {"loom-ca-cert", "loom-server-cert"}
    values = yaml.safe_load(named(docs, "ConfigMap", "loom-connect-injector-values")["data"]
                            ["values.yaml"])  # fmt: skip
    assert values["global"]["tls"] == {"enabled": False}
    assert settings_from(values).server.http_addr == "loom-server.loom.svc:8500"
    assert "--ca-file" not in yaml.safe_dump_all(docs)


def test_given_files_are_rendered_as_they_are_and_checked_first(capsys, tmp_path: Path) -> None:
    mine = generate_server_tls("loom", "loom", "dc1", NOW)
    other = generate_tls("other", "loom", NOW)
    for name, pem in (("cert", mine.cert_pem), ("key", mine.key_pem), ("ca", mine.ca_pem),
                      ("other-key", other.key_pem), ("other-ca", other.ca_pem)):  # fmt: skip
        (tmp_path / f"{name}.pem").write_bytes(pem)

    def files(cert: str = "cert", key: str = "key", ca: str = "ca") -> list[str]:
        return [f"--tls-cert-file={tmp_path / cert}.pem", f"--tls-key-file={tmp_path / key}.pem",
                f"--tls-ca-file={tmp_path / ca}.pem"]  # fmt: skip

    docs = install_cli(capsys, *files())
    assert secret_bytes(docs, "loom-server-cert", "tls.crt") == mine.cert_pem
    assert secret_bytes(docs, "loom-server-cert", "tls.key") == mine.key_pem
    assert secret_bytes(docs, "loom-ca-cert", "tls.crt") == mine.ca_pem
    for args, message in (
        (files(key="other-key"), "other-key.pem: not the key of"),
        (files(ca="other-ca"), "cert.pem: not signed by the CA in"),
        (files(cert="missing"), "--tls-cert-file"),
        (files()[:2], "give --tls-cert-file, --tls-key-file and --tls-ca-file together"),
        ([*files(), "--tls=false"], "need TLS on"),
    ):
        assert main(["install", *args]) == 2, args
        out = capsys.readouterr()
        assert message in out.err and out.out == "", (args, out.err)
    with pytest.raises(SystemExit):
        main(["install", "--tls=maybe"])
    assert "'maybe' is not true or false" in capsys.readouterr().err


def test_names_and_namespace_of_the_install_are_in_the_addresses_and_the_certificate() -> None:
    values = parse_values("global:\n  name: mesh\n  namespace: mesh-system\n")
    install = InstallSettings.from_values(values)
    inject = settings_from(with_install_defaults(values))
    assert inject.server.http_addr == "https://mesh-server.mesh-system.svc:8501"
    assert inject.server.grpc_addr == "https://mesh-server.mesh-system.svc:8503"
    assert inject.server_ca.secret_name == "mesh-ca-cert"
    material = generate_server_tls("mesh", "mesh-system", "dc1", NOW)
    docs = render(values, inject, install, None, TOKENS, material)
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"} >= {
        "mesh-ca-cert", "mesh-server-cert"
    }  # fmt: skip
    cert = x509.load_pem_x509_certificate(material.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mesh-server.mesh-system.svc" in sans.get_values_for_type(x509.DNSName)


def test_render_refuses_a_tls_server_without_its_certificate_or_material_with_tls_off() -> None:
    values = parse_values("")
    install = InstallSettings.from_values(values)
    with pytest.raises(SettingsError, match="the server's certificate is not given"):
        render(values, settings_from(with_install_defaults(values)), install, None, TOKENS)
    off = parse_values("global:\n  tls:\n    enabled: false\n")
    material = TlsMaterial(b"C", b"K", b"A")
    with pytest.raises(SettingsError, match="given with TLS off"):
        render(off, settings_from(with_install_defaults(off)), install, None, TOKENS, material)
    # An existing server (server.enabled: false): clients still use TLS, with the user's CA
    # Secret, and no certificate is needed here.
    external = parse_values("server:\n  enabled: false\n")
    docs = render(external, settings_from(with_install_defaults(external)), install, None, TOKENS)
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    ctr = named(docs, "Deployment", "loom-endpoints-controller")["spec"]["template"]["spec"]
    assert "--ca-file=/etc/loom/server-ca/tls.crt" in ctr["containers"][0]["args"]


def test_the_ca_secret_is_rendered_in_the_install_namespace_only_whatever_the_allow_list() -> None:
    values = parse_values(
        "connectInject:\n  k8sAllowNamespaces: ['shop', 'pay', 'old']\n"
        "  k8sDenyNamespaces: ['old']\n"
    )
    inject = settings_from(with_install_defaults(values))
    material = TlsMaterial(b"C", b"K", b"THE CA")
    docs = render(values, inject, InstallSettings.from_values(values), None, TOKENS, material)
    cas = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "loom-ca-cert"]
    assert [d["metadata"]["namespace"] for d in cas] == ["loom"]
    assert set(cas[0]["data"]) == {"tls.crt"}  # the CA only, never a key
    shown = yaml.safe_load(named(docs, "ConfigMap", "loom-connect-injector-values")["data"]
                           ["values.yaml"])  # fmt: skip
    assert shown["global"]["tls"]["caCert"]["pem"] == "THE CA"


def test_without_a_pem_in_the_values_injected_pods_mount_the_ca_secret_as_before() -> None:
    # server.enabled: false with the user's own CA Secret: the values carry no PEM.
    external = parse_values("server:\n  enabled: false\n")
    inject = settings_from(with_install_defaults(external))
    assert inject.server_ca.mounted and not inject.server_ca.pem
    given = settings_from(with_install_defaults(parse_values(
        "server:\n  enabled: false\nglobal:\n  tls:\n    caCert:\n      pem: MY CA\n"
    )))  # fmt: skip
    assert given.server_ca.pem == "MY CA" and not given.server_ca.mounted
