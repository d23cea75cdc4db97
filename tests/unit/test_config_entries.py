from __future__ import annotations

import pytest

from loom.domain.config_entries import validate_entry
from loom.domain.entries import (
    ExternalPort,
    ExternalService,
    HeaderMatch,
    HttpMatch,
    IntentionPermission,
    IntentionSource,
    MeshConfig,
    ProxyDefaults,
    ServiceDefaults,
    ServiceIntentions,
)
from loom.domain.fields import ValidationError
from loom.domain.records import TransparentProxySettings


def test_service_defaults_are_normalised() -> None:
    entry = validate_entry({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
    assert entry == ServiceDefaults(name="web", protocol="http")
    assert (entry.mutual_tls_mode, entry.namespace, entry.key) == ("", "default", "service-defaults/default/web")


def test_each_kind_decodes_into_its_own_record() -> None:
    tp = {"OutboundListenerPort": 15002, "DialedDirectly": True}
    assert validate_entry(
        {"Kind": "proxy-defaults", "Name": "global", "Namespace": "x", "Config": {"protocol": "http"},
         "Mode": "transparent", "TransparentProxy": tp}
    ) == ProxyDefaults(name="global", config={"protocol": "http"}, mode="transparent",
                       transparent_proxy=TransparentProxySettings(15002, True))
    assert validate_entry({"Kind": "mesh", "Name": "mesh"}) == MeshConfig(name="mesh")
    assert validate_entry(
        {"kind": "mesh", "name": "mesh", "transparent_proxy": {"mesh_destinations_only": True}}
    ) == MeshConfig(name="mesh", mesh_destinations_only=True)
    assert validate_entry(
        {"Kind": "external-service", "Name": "pay", "Namespace": "team", "Meta": {"a": "b"},
         "Hosts": ["API.Stripe.com", "*.stripe.com"], "Ports": [{"Number": 443}]}
    ) == ExternalService(name="pay", namespace="team", meta={"a": "b"},
                         hosts=("api.stripe.com", "*.stripe.com"), ports=(ExternalPort(443),))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Name": "web"}, "Kind: is required"),
        ({"Kind": "nope", "Name": "web"}, "Kind: 'nope' is not one of"),
        ({"Kind": "service-defaults", "Name": "web", "Protocol": "smtp"}, "Protocol: 'smtp'"),
        ({"Kind": "service-defaults", "Name": "web", "Protcol": "http"}, "Protcol: unknown field (did you mean 'Protocol'?)"),
        ({"Kind": "service-defaults", "Name": "web", "MutualTLSMode": "loose"}, "MutualTLSMode"),
        ({"Kind": "proxy-defaults", "Name": "web"}, "must be named 'global'"),
        ({"Kind": "mesh", "Name": "mesh", "TransparentProxy": {"MeshDestinationsOnly": "yes"}},
         "TransparentProxy.MeshDestinationsOnly: expected true or false"),
        ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "maybe"}]},
         "Sources[0].Action: 'maybe' is not one of"),
        ({"Kind": "service-intentions", "Name": "db",
          "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}]},
         "Sources[1]: duplicate source"),
        ({"Kind": "service-intentions", "Name": "db",
          "Sources": [{"Name": "web", "Action": "allow", "Permissions": [{"Action": "allow", "HTTP": {}}]}]},
         "set either Action or Permissions"),
        ({"Kind": "external-service", "Name": "db1", "Hosts": ["bad host"], "Ports": [{"Number": 3306}]},
         "Hosts[0]: 'bad host' is not a host name"),
        ({"Kind": "external-service", "Name": "db1", "Hosts": ["db.example.com"]},
         "Ports: at least one port"),
    ],
)  # fmt: skip
def test_invalid_entries_are_rejected_with_the_field_named(body, message) -> None:
    with pytest.raises(ValidationError) as err:
        validate_entry(body)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_intentions_with_l7_permissions_are_accepted() -> None:
    doc = validate_entry(
        {
            "Kind": "service-intentions",
            "Name": "api",
            "Sources": [
                {"Name": "web", "Permissions": [
                    {"Action": "allow", "HTTP": {"PathPrefix": "/v1", "Methods": ["get"]}}]},
                {"Name": "*", "Action": "deny"},
            ],
        }
    )  # fmt: skip
    assert isinstance(doc, ServiceIntentions)
    assert doc.sources[0].permissions == (
        IntentionPermission("allow", HttpMatch(path_prefix="/v1", methods=("GET",))),
    )
    assert doc.sources[1] == IntentionSource(name="*", action="deny")


def test_header_matches_keep_which_parts_were_given() -> None:
    doc = validate_entry(
        {"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Permissions": [
            {"Action": "deny", "HTTP": {"PathExact": "", "Header": [
                {"Name": "X-Debug", "Present": False}, {"Name": "X-Any"},
                {"Name": "X-Env", "Exact": "", "Invert": True}]}}]}]}
    )  # fmt: skip
    assert isinstance(doc, ServiceIntentions)
    http = doc.sources[0].permissions[0].http
    assert http == HttpMatch(
        path_exact="",
        headers=(
            HeaderMatch("X-Debug", present=False),
            HeaderMatch("X-Any"),
            HeaderMatch("X-Env", exact="", invert=True),
        ),
    )
