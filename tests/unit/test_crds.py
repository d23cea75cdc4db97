"""The pure CRD -> config entry conversion (loom.domain.crds), shared by Kubernetes and local."""

from __future__ import annotations

import pytest

from loom.domain.config_entries import validate_entry
from loom.domain.crds import (
    CrdError,
    consul_key,
    may_write,
    owner_of,
    same_status,
    synced_status,
    to_config_entry,
)

API = "consul.hashicorp.com/v1alpha1"


def resource(kind: str, name: str, spec: dict, namespace: str = "shop") -> dict:
    return {"apiVersion": API, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "consul"),
    [("pathExact", "PathExact"), ("http", "HTTP"), ("tlsMinVersion", "TLSMinVersion"),
     ("jwt", "JWT"), ("mutualTLSMode", "MutualTLSMode"), ("tls", "TLS"),
     ("transparentProxy", "TransparentProxy"), ("tlsx", "Tlsx")],
)  # fmt: skip
def test_spec_keys_become_consuls_field_names(key: str, consul: str) -> None:
    assert consul_key(key) == consul


def test_an_l7_service_intentions_resource_is_the_entry_of_its_destination() -> None:
    spec = {
        "destination": {"name": "web"},
        "sources": [
            {"name": "frontend", "action": "allow"},
            {"name": "admin", "permissions": [
                {"action": "allow", "http": {"pathPrefix": "/admin", "methods": ["GET"],
                                             "header": [{"name": "x-id", "present": True}]}}]},
        ],
    }  # fmt: skip
    entry = to_config_entry(resource("ServiceIntentions", "web-intentions", spec), "dc1")
    assert entry["Kind"] == "service-intentions" and entry["Name"] == "web"
    assert entry["Sources"][1]["Permissions"][0]["HTTP"] == {
        "PathPrefix": "/admin",
        "Methods": ["GET"],
        "Header": [{"Name": "x-id", "Present": True}],
    }
    assert entry["Meta"]["consul.hashicorp.com/source-kube-resource"] == (
        "shop/ServiceIntentions/web-intentions"
    )
    assert validate_entry(entry).name == "web"  # what the server stores


def test_proxy_defaults_config_is_passed_as_written_and_singletons_keep_their_name() -> None:
    spec = {"config": {"envoy_prometheus_bind_addr": "0.0.0.0:9102"}, "mode": "transparent"}
    entry = to_config_entry(resource("ProxyDefaults", "global", spec), "dc1")
    assert entry["Config"] == {"envoy_prometheus_bind_addr": "0.0.0.0:9102"}
    assert entry["Mode"] == "transparent"
    with pytest.raises(CrdError, match="a Mesh resource must be named 'mesh', not 'other'"):
        to_config_entry(resource("Mesh", "other", {}), "dc1")
    with pytest.raises(CrdError, match="kind: 'ServiceRouter' is not one of"):
        to_config_entry(resource("ServiceRouter", "web", {}), "dc1")
    with pytest.raises(CrdError, match=r"spec\.destination\.name: is required"):
        to_config_entry(resource("ServiceIntentions", "x", {"sources": []}), "dc1")


def test_an_entry_is_written_only_when_absent_or_made_by_the_same_resource() -> None:
    mine = resource("ServiceDefaults", "web", {"protocol": "http"})
    entry = to_config_entry(mine, "dc1")
    assert may_write(None, mine, "dc1") is None
    assert may_write(entry, mine, "dc1") is None
    assert owner_of(entry) == "shop/ServiceDefaults/web"
    other = resource("ServiceDefaults", "web", {}, namespace="billing")
    assert "made by resource shop/ServiceDefaults/web" in (may_write(entry, other, "dc1") or "")
    by_hand = {"Kind": "service-defaults", "Name": "web", "Protocol": "tcp"}
    assert "something other than a Kubernetes resource" in (may_write(by_hand, mine, "dc1") or "")
    assert may_write(entry, mine, "dc2") is not None


def test_the_synced_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = synced_status(None, True, "", "", "2030-01-01T00:00:00Z")
    assert first == {
        "conditions": [{"type": "Synced", "status": "True",
                        "lastTransitionTime": "2030-01-01T00:00:00Z"}],
        "lastSyncedTime": "2030-01-01T00:00:00Z",
    }  # fmt: skip
    again = synced_status(first, True, "", "", "2030-01-01T00:05:00Z")
    assert again["conditions"][0]["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    assert same_status(first, again)
    failed = synced_status(
        again, False, "ConsulAgentError", "Foo: unknown field", "2030-01-02T00:00:00Z"
    )
    assert failed["conditions"][0] == {
        "type": "Synced", "status": "False", "lastTransitionTime": "2030-01-02T00:00:00Z",
        "reason": "ConsulAgentError", "message": "Foo: unknown field",
    }  # fmt: skip
    assert failed["lastSyncedTime"] == "2030-01-01T00:05:00Z"  # the last success
    assert not same_status(again, failed)
