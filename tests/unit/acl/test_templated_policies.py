"""Templated policies, pure: the rules each template renders (Consul's text, byte for byte),
the synthetic policy's ID and name derived as Consul derives them, Consul's validation
messages, duplicates dropped, and what a token holding one may and may not do."""

from __future__ import annotations

import datetime as dt

import pytest

from loom.acl.records import Role, Token, resolve, token_policies
from loom.acl.rules import Access
from loom.acl.templated import TEMPLATES, synthetic_doc
from loom.acl.wire import RecordError

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _token(*templated: dict[str, object], local: bool = False) -> Token:
    return Token.from_json({"TemplatedPolicies": list(templated), "Local": local})


def test_builtin_service_renders_consul_s_service_identity_rules() -> None:
    rules = synthetic_doc(TEMPLATES["builtin/service"], "api")["Rules"]
    assert rules == (
        '\nservice "api" {\n\tpolicy = "write"\n}\nservice "api-sidecar-proxy" {\n\t'
        'policy = "write"\n}\nservice_prefix "" {\n\tpolicy = "read"\n}\nnode_prefix "" '
        '{\n\tpolicy = "read"\n}'
    )


def test_the_synthetic_policy_id_is_the_rules_in_hex_then_an_empty_fnv128a_sum() -> None:
    """Consul's documented preview of builtin/service for "web" starts with these bytes."""
    doc = synthetic_doc(TEMPLATES["builtin/service"], "web")
    assert doc["ID"].startswith("0a73657276696365202277656222207")
    assert doc["ID"].endswith("6c62272e07bb014262b821756295c58d")
    assert bytes.fromhex(doc["ID"][:-32]).decode() == doc["Rules"]
    assert doc["Name"] == f"synthetic-policy-{doc['ID']}"
    assert doc["Description"] == "synthetic policy generated from templated policy: builtin/service"


def test_a_token_with_builtin_service_may_write_its_service_and_sidecar_and_read_the_rest() -> None:
    authz = resolve(
        _token({"TemplateName": "builtin/service", "TemplateVariables": {"Name": "web"}}),
        policies={}, roles={}, datacenter="dc1", default_allow=False, now=NOW,
    )  # fmt: skip
    assert authz.allowed("service", Access.WRITE, "web")
    assert authz.allowed("service", Access.WRITE, "web-sidecar-proxy")
    assert authz.allowed("service", Access.READ, "db") and authz.allowed("node", Access.READ, "n1")
    assert not authz.allowed("service", Access.WRITE, "db")
    assert not authz.allowed("service", Access.WRITE, "web2")
    assert not authz.allowed("key", Access.READ, "x") and not authz.allowed("acl", Access.READ)


def test_builtin_node_and_builtin_dns_grant_what_consul_s_templates_grant() -> None:
    node = resolve(
        _token({"TemplateName": "builtin/node", "TemplateVariables": {"name": "n1"}}),
        policies={}, roles={}, datacenter="dc1", default_allow=False, now=NOW,
    )  # fmt: skip
    assert node.allowed("node", Access.WRITE, "n1") and not node.allowed("node", Access.WRITE, "n2")
    assert node.allowed("service", Access.READ, "web")
    dns = resolve(_token({"TemplateName": "builtin/dns"}), policies={}, roles={},
                  datacenter="dc1", default_allow=False, now=NOW)  # fmt: skip
    assert dns.allowed("query", Access.READ, "q") and dns.allowed("node", Access.READ, "n")
    assert not dns.allowed("service", Access.WRITE, "web")


def test_a_role_s_templated_policy_applies_to_the_role_s_tokens() -> None:
    role = Role.from_json({"ID": "7b0c8b5e-1d11-4bb5-9c02-0d4a5b2f3c11", "Name": "web",
                           "TemplatedPolicies": [{"TemplateName": "builtin/service",
                                                  "TemplateVariables": {"Name": "web"}}]})  # fmt: skip
    token = Token.from_json({"Roles": [{"Name": "web"}]})
    authz = resolve(token, policies={}, roles={role.id: role}, datacenter="dc1",
                    default_allow=False, now=NOW)  # fmt: skip
    assert authz.allowed("service", Access.WRITE, "web")


def test_a_templated_policy_scoped_to_another_datacenter_grants_nothing_here() -> None:
    token = _token({"TemplateName": "builtin/service", "TemplateVariables": {"Name": "web"},
                    "Datacenters": ["dc2"]})  # fmt: skip
    assert token_policies(token, policies={}, roles={}, datacenter="dc1") == []
    assert len(token_policies(token, policies={}, roles={}, datacenter="dc2")) == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"TemplateName": "builtin/nope"},
         "templated policy with an invalid templated name: builtin/nope for this token"),
        ({"TemplateVariables": {"Name": "web"}},
         "templated policy is missing the template name field on this token"),
        ({"TemplateName": "builtin/service"},
         "encountered templated policy variable validation error for builtin/service: "
         "Invalid type. Expected: object, given: null"),
        ({"TemplateName": "builtin/service", "TemplateVariables": {}},
         "service identity \"\" has an invalid name"),
        ({"TemplateName": "builtin/service", "TemplateVariables": {"Name": "Web*"}},
         "service identity \"Web*\" has an invalid name. Only lowercase alphanumeric"),
        ({"TemplateName": "builtin/node", "TemplateVariables": {"Name": 'a"}\nacl = "write'}},
         "node identity \"a\\\"}\\nacl = \\\"write\"  has an invalid name"),
        ({"TemplateName": "builtin/service", "TemplateVariables": {"Name": "web", "Other": 1}},
         "unknown field"),
    ],
)  # fmt: skip
def test_hostile_or_incomplete_templated_policies_are_refused_in_consul_s_words(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(RecordError) as caught:
        _token(entry)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_local_token_s_templated_policy_cannot_list_datacenters() -> None:
    with pytest.raises(RecordError, match="cannot list datacenters"):
        _token({"TemplateName": "builtin/dns", "Datacenters": ["dc1"]}, local=True)


def test_duplicates_are_dropped_as_consul_deduplicates_them() -> None:
    web = {"TemplateName": "builtin/service", "TemplateVariables": {"Name": "web"}}
    db = {"TemplateName": "builtin/service", "TemplateVariables": {"Name": "db"}}
    dns = {"TemplateName": "builtin/dns"}
    token = _token(web, db, web, dns, dns)
    assert [t.to_json() for t in token.templated_policies] == [web, db, dns]


def test_a_token_without_templated_policies_writes_no_such_field() -> None:
    """Consul's ``omitempty``: the goldens of tokens made before stay as they were."""
    assert "TemplatedPolicies" not in Token.from_json({}).to_json()
    assert "TemplatedPolicies" in _token({"TemplateName": "builtin/dns"}).to_json()


@pytest.mark.parametrize(
    ("name", "template_id", "needs_name"),
    [
        ("builtin/nomad-server", "00000000-0000-0000-0000-000000000006", False),
        ("builtin/api-gateway", "00000000-0000-0000-0000-000000000008", True),
        ("builtin/nomad-client", "00000000-0000-0000-0000-000000000009", False),
    ],
)
def test_the_nomad_and_api_gateway_templates_carry_consul_s_ids_and_schemas(
    name: str, template_id: str, needs_name: bool
) -> None:
    template = TEMPLATES[name]
    assert template.id == template_id
    assert ('"required": ["name"]' in template.schema) is needs_name
    assert template.to_json()["TemplateName"] == name


def _grants(*templated: dict[str, object]) -> object:
    return resolve(
        _token(*templated), policies={}, roles={}, datacenter="dc1", default_allow=False, now=NOW
    )


def test_builtin_api_gateway_writes_its_own_service_and_reads_the_mesh() -> None:
    authz = _grants({"TemplateName": "builtin/api-gateway", "TemplateVariables": {"Name": "gw"}})
    assert authz.allowed("service", Access.WRITE, "gw")  # type: ignore[attr-defined]
    assert not authz.allowed("service", Access.WRITE, "web")  # type: ignore[attr-defined]
    assert authz.allowed("service", Access.READ, "web")  # type: ignore[attr-defined]
    assert authz.allowed("mesh", Access.READ)  # type: ignore[attr-defined]
    assert not authz.allowed("mesh", Access.WRITE)  # type: ignore[attr-defined]
    assert not authz.allowed("acl", Access.READ)  # type: ignore[attr-defined]


def test_builtin_nomad_client_writes_services_and_reads_agents_nodes_and_keys() -> None:
    authz = _grants({"TemplateName": "builtin/nomad-client"})
    assert authz.allowed("service", Access.WRITE, "anything")  # type: ignore[attr-defined]
    assert authz.allowed("agent", Access.READ, "n1")  # type: ignore[attr-defined]
    assert authz.allowed("key", Access.READ, "k")  # type: ignore[attr-defined]
    assert not authz.allowed("key", Access.WRITE, "k")  # type: ignore[attr-defined]
    assert not authz.allowed("node", Access.WRITE, "n1")  # type: ignore[attr-defined]


def test_builtin_nomad_server_manages_acls_and_the_mesh_and_its_own_node() -> None:
    authz = _grants({"TemplateName": "builtin/nomad-server", "TemplateVariables": {"Name": "s1"}})
    assert authz.allowed("acl", Access.WRITE)  # type: ignore[attr-defined]
    assert authz.allowed("mesh", Access.WRITE)  # type: ignore[attr-defined]
    assert authz.allowed("service", Access.WRITE, "x")  # type: ignore[attr-defined]
    assert authz.allowed("node", Access.WRITE, "s1")  # type: ignore[attr-defined]
    assert not authz.allowed("node", Access.WRITE, "s2")  # type: ignore[attr-defined]
    bare = _grants({"TemplateName": "builtin/nomad-server"})
    assert bare.allowed("acl", Access.WRITE)  # type: ignore[attr-defined]
    assert not bare.allowed("node", Access.WRITE, "s1")  # type: ignore[attr-defined]


@pytest.mark.parametrize("template", ["builtin/api-gateway", "builtin/nomad-server"])
def test_a_name_that_would_write_rules_of_its_own_is_refused(template: str) -> None:
    hostile = 'gw" { policy = "write" }\nacl = "write"\nservice "x'
    with pytest.raises(RecordError) as caught:
        _token({"TemplateName": template, "TemplateVariables": {"Name": hostile}})
    assert f"validation error for {template}" in str(caught.value)
    assert "is not a valid name" in str(caught.value)


def test_api_gateway_without_a_name_is_refused_as_consul_s_schema_refuses_it() -> None:
    with pytest.raises(RecordError, match=r"Invalid type\. Expected: object, given: null"):
        _token({"TemplateName": "builtin/api-gateway"})
    with pytest.raises(RecordError, match="name is required"):
        _token({"TemplateName": "builtin/api-gateway", "TemplateVariables": {}})
