from __future__ import annotations

import pytest

from loom.inject import ContainerResources, InjectSettings, SettingsError
from loom.k8s.values import parse_values, settings_from


def test_empty_values_give_the_documented_defaults() -> None:
    settings = InjectSettings.from_values({})
    assert settings == InjectSettings()
    assert settings.enabled and not settings.default_inject
    assert settings.allow_namespaces == ("*",) and settings.deny_namespaces == ()
    assert settings.transparent_proxy.enabled and settings.transparent_proxy.overwrite_probes
    assert settings.sidecar_resources == ContainerResources("100m", "100m", "100Mi", "100Mi")


def test_helm_keys_of_the_seeds_are_read() -> None:
    settings = InjectSettings.from_values(
        parse_values(
            """
global:
  enableConsulNamespaces: true
connectInject:
  enabled: true
  default: true
  k8sAllowNamespaces: ['my-ns-1', 'my-ns-2']
  k8sDenyNamespaces: ['no-inject-ns-1']
  transparentProxy: {defaultEnabled: false, defaultOverwriteProbes: false}
  envoyExtraArgs: "--log-level debug --disable-hot-restart"
  centralConfig: {defaultProtocol: http}
  consulNamespaces: {mirroringK8S: true, mirroringK8SPrefix: 'k8s-'}
"""
        )
    )
    assert settings.default_inject
    assert settings.allow_namespaces == ("my-ns-1", "my-ns-2")
    assert settings.deny_namespaces == ("no-inject-ns-1",)
    assert not settings.transparent_proxy.enabled
    assert not settings.transparent_proxy.overwrite_probes
    assert settings.envoy_extra_args == ("--log-level", "debug", "--disable-hot-restart")
    assert settings.default_protocol == "http"
    assert settings.namespaces.consul_namespace("ns-1") == "k8s-ns-1"


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"connectInject": {"default": "yes"}}, "connectInject.default: expected a boolean"),
        ({"connectInject": {"defualt": True}}, "connectInject.defualt: unknown key"),
        ({"connectInject": {"k8sAllowNamespaces": "my-ns"}}, "connectInject.k8sAllowNamespaces"),
        ({"connectInject": {"centralConfig": {"defaultProtocol": "udp"}}}, "defaultProtocol"),
        ({"dns": {"proxyPort": 70000}}, "dns.proxyPort: 70000 is not a port"),
        ({"connectInject": {"transparentProxy": True}}, "connectInject.transparentProxy:"),
        (
            {"connectInject": {"sidecarProxy": {"resources": {"limits": {"cpu": "fast"}}}}},
            "connectInject.sidecarProxy.resources.limits.cpu",
        ),
    ],
)
def test_a_bad_value_is_an_error_naming_its_key(values, key) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        InjectSettings.from_values(values)


def test_sections_loom_does_not_own_are_ignored_and_install_keys_accepted() -> None:
    values = {"ui": {"enabled": True}, "connectInject": {"replicas": 2}}
    with pytest.raises(SettingsError, match=r"connectInject\.replicas: unknown key"):
        InjectSettings.from_values(values)
    assert settings_from(values) == InjectSettings()


def test_a_null_resource_removes_the_default_and_numbers_are_quantities() -> None:
    settings = InjectSettings.from_values(
        {"connectInject": {"sidecarProxy": {"resources": {"limits": {"cpu": None, "memory": 1}}}}}
    )
    assert settings.sidecar_resources == ContainerResources("100m", None, "100Mi", "1")


def test_a_values_file_that_is_not_a_mapping_is_a_one_line_error() -> None:
    with pytest.raises(SettingsError, match="expected a mapping"):
        parse_values("- a\n- b\n")
    with pytest.raises(SettingsError, match="malformed YAML"):
        parse_values("connectInject: {default: [\n")


def test_pods_log_in_only_when_acls_are_managed_or_an_auth_method_is_named() -> None:
    assert InjectSettings.from_values({}).login.auth_method is None
    managed = {"global": {"acls": {"manageSystemACLs": True}}}
    assert InjectSettings.from_values(managed).login.auth_method == "loom-k8s-auth-method"
    named = {**managed, "connectInject": {"overrideAuthMethodName": "mine"}}
    assert InjectSettings.from_values(named).login.auth_method == "mine"
    with pytest.raises(SettingsError, match="overrideAuthMethodName: must not be empty"):
        InjectSettings.from_values({"connectInject": {"overrideAuthMethodName": ""}})
