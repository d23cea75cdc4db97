"""The server's CA in injected pods (``global.tls.*``, consul-k8s's values): with its PEM in
the values, in ``CONSUL_CACERT_PEM`` of connect-init and the sidecar (no volume, so a pod in
any namespace starts); else mounted from its Secret read-only into both, given as
``--ca-file``, which their real command-line parsers take; https:// and Consul's TLS ports by default; a missing
Secret name, an address that is not https:// and a hostile Secret key are refused."""

from __future__ import annotations

from typing import Any

import pytest

from loom.cli import build_parser
from loom.inject.decision import NamespaceInfo
from loom.inject.errors import SettingsError
from loom.inject.injection import plan_injection
from loom.inject.settings import InjectSettings


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "annotations": {"consul.hashicorp.com/connect-inject": "true"}},
        "spec": {"containers": [{"name": "web", "image": "web", "ports": [{"containerPort": 80}]}],
                 "serviceAccountName": "web"},
    }  # fmt: skip


def inject(pod: dict[str, Any], settings: InjectSettings) -> dict[str, Any]:
    result = plan_injection(pod, NamespaceInfo("default"), settings)
    assert result.pod is not None
    return result.pod


def _tls(**extra: Any) -> InjectSettings:
    values: dict[str, Any] = {"global": {"tls": {"enabled": True,
                                                 "caCert": {"secretName": "ca", **extra}}}}
    return InjectSettings.from_values(values)


def test_an_https_server_s_ca_is_mounted_and_given_to_connect_init_and_the_sidecar() -> None:
    out = inject(_pod(), _tls())
    spec = out["spec"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "loom-ca-cert"]
    assert volume["secret"] == {"secretName": "ca", "items": [{"key": "tls.crt", "path": "tls.crt"}]}
    parser = build_parser()
    for container in (spec["initContainers"][-1], spec["containers"][-1]):
        assert {"name": "loom-ca-cert", "mountPath": "/loom/tls/ca", "readOnly": True} in (
            container["volumeMounts"]
        )
        argv = [*container["command"][1:], *container["args"]]
        rest = argv.index("--") if "--" in argv else len(argv)
        args = parser.parse_args(argv[:rest])
        assert args.ca_file == "/loom/tls/ca/tls.crt"
        assert args.http_addr == "https://loom-server.loom.svc:8501"


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_a_ca_pem_in_the_values_goes_into_the_environment_and_nothing_is_mounted() -> None:
    pod = _pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "CONSUL_CACERT_PEM", "value": "app's own"}]
    out = inject(pod, _tls(pem=PEM))
    spec = out["spec"]
    assert all(v["name"] != "loom-ca-cert" for v in spec["volumes"])
    parser = build_parser()
    for container in (spec["initContainers"][-1], spec["containers"][-1]):
        assert {"name": "CONSUL_CACERT_PEM", "value": PEM} in container["env"]
        assert [e["name"] for e in container["env"]].count("CONSUL_CACERT_PEM") == 1
        assert all(m["name"] != "loom-ca-cert" for m in container["volumeMounts"])
        argv = [*container["command"][1:], *container["args"]]
        rest = argv.index("--") if "--" in argv else len(argv)
        args = parser.parse_args(argv[:rest])
        assert args.ca_file is None
        assert args.http_addr == "https://loom-server.loom.svc:8501"
    # The application's own containers are left as they were.
    assert spec["containers"][0]["env"] == [{"name": "CONSUL_CACERT_PEM", "value": "app's own"}]


def test_a_ca_pem_needs_no_secret_name_and_is_dropped_with_tls_off() -> None:
    settings = InjectSettings.from_values({"global": {"tls": {"enabled": True,
                                                              "caCert": {"pem": PEM}}}})
    assert settings.server_ca.pem == PEM and not settings.server_ca.mounted
    off = InjectSettings.from_values({"global": {"tls": {"enabled": False,
                                                         "caCert": {"pem": PEM}}}})
    spec = inject(_pod(), off)["spec"]
    assert not [e for c in spec["containers"] for e in c.get("env", [])
                if e["name"] == "CONSUL_CACERT_PEM"]  # fmt: skip


def test_without_tls_nothing_is_mounted_and_the_addresses_stay_plain() -> None:
    spec = inject(_pod(), InjectSettings())["spec"]
    assert all(v["name"] != "loom-ca-cert" for v in spec["volumes"])
    assert not any(a.startswith("--ca-file") for c in spec["containers"] for a in c.get("args", []))


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"global": {"tls": {"enabled": True}}}, "secretName: required"),
        ({"global": {"tls": {"enabled": True, "caCert": {"secretName": "ca"}}},
          "server": {"httpAddr": "loom-server.loom.svc:8500"}}, "must be https://"),
        ({"global": {"tls": {"enabled": True,
                             "caCert": {"secretName": "ca", "secretKey": "../../etc/shadow"}}}},
         "is not a Secret key"),
    ],
)  # fmt: skip
def test_incomplete_or_hostile_tls_values_are_refused(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        InjectSettings.from_values(values)
