from __future__ import annotations

import pytest

from loom.domain.config_entries import validate_entry
from loom.domain.fields import ValidationError


def test_service_defaults_are_normalised() -> None:
    doc = validate_entry({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
    assert doc["Protocol"] == "http"
    assert doc["MutualTLSMode"] == ""
    assert doc["Namespace"] == "default"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Name": "web"}, "Kind: is required"),
        ({"Kind": "nope", "Name": "web"}, "Kind: 'nope' is not one of"),
        ({"Kind": "service-defaults", "Name": "web", "Protocol": "smtp"}, "Protocol: 'smtp'"),
        ({"Kind": "service-defaults", "Name": "web", "Protcol": "http"}, "Protcol: unknown field"),
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
    assert doc["Sources"][0]["Permissions"][0]["HTTP"] == {"PathPrefix": "/v1", "Methods": ["GET"]}
    assert doc["Sources"][1]["Action"] == "deny"
