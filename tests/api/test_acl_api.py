"""The ACL API of a real `loom server` with ACLs on, driven by py-consul and plain HTTP.

Bootstrap once, then refused as Consul refuses it; policies, roles and tokens made and read
back in Consul's shapes; the initial management token; ACLs off answering 401; and the
intention default following the ACL default policy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import consul
import pytest

from tests.support.server import ServerProcess, start_server
from tests.support.server import acl_server as running_acl_server

WEB_RULES = 'service "web" { policy = "write" }\nnode_prefix "" { policy = "read" }'


def _client(server: ServerProcess, token: str | None = None) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port), token=token)


@pytest.fixture
def acl_server() -> Iterator[ServerProcess]:
    with running_acl_server() as server:
        yield server


def test_py_consul_bootstraps_once_and_the_second_bootstrap_is_refused(
    acl_server: ServerProcess,
) -> None:
    c = _client(acl_server)
    token = c.acl.bootstrap()
    assert token["Policies"] == [
        {"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}
    ]
    uuid.UUID(token["SecretID"])
    with pytest.raises(consul.ACLPermissionDenied) as caught:
        c.acl.bootstrap()
    assert "ACL bootstrap no longer allowed" in str(caught.value)
    me = _client(acl_server, token["SecretID"]).acl.token.read_self()
    assert me["AccessorID"] == token["AccessorID"]


def test_py_consul_creates_a_policy_and_a_token_that_reads_itself(
    acl_server: ServerProcess,
) -> None:
    admin = _client(acl_server, _client(acl_server).acl.bootstrap()["SecretID"])
    # py-consul sends rules as JSON text (json.dumps of what it is given), as Consul reads them
    rules = {"service": {"web": {"policy": "write"}}, "node_prefix": {"": {"policy": "read"}}}
    policy = admin.acl.policy.create("web-writer", rules=rules, description="web")
    assert json.loads(policy["Rules"]) == rules and policy["Description"] == "web"
    assert admin.acl.policy.read(policy["ID"])["Name"] == "web-writer"
    made = admin.acl.token.create(description="for web", policies_name=["web-writer"])
    assert made["Policies"] == [{"ID": policy["ID"], "Name": "web-writer"}]
    me = _client(acl_server, made["SecretID"]).acl.token.read_self()
    assert (me["AccessorID"], me["Description"]) == (made["AccessorID"], "for web")
    listed = {t["AccessorID"] for t in admin.acl.token.list()}
    assert made["AccessorID"] in listed
    assert "web-writer" in [p["Name"] for p in admin.acl.policy.list()]
    # The new token may register web but not read the ACL system.
    with pytest.raises(consul.ACLPermissionDenied) as caught:
        _client(acl_server, made["SecretID"]).acl.token.list()
    assert "lacks permission 'acl:read'" in str(caught.value)


def test_a_role_links_policies_and_a_token_with_the_role_gets_their_rules(
    acl_server: ServerProcess,
) -> None:
    root = acl_server.put("/v1/acl/bootstrap")["SecretID"]
    mgmt = {"X-Consul-Token": root}
    _, policy, _ = acl_server.request(
        "PUT", "/v1/acl/policy", {"Name": "web-writer", "Rules": WEB_RULES}, mgmt
    )
    status, role, _ = acl_server.request(
        "PUT", "/v1/acl/role", {"Name": "web-role", "Policies": [{"Name": "web-writer"}]}, mgmt
    )
    assert status == 200 and role["Policies"] == [{"ID": policy["ID"], "Name": "web-writer"}]
    assert (
        acl_server.request("GET", "/v1/acl/role/name/web-role", None, mgmt)[1]["ID"] == role["ID"]
    )
    status, token, _ = acl_server.request(
        "PUT", "/v1/acl/token", {"Roles": [{"ID": role["ID"]}]}, mgmt
    )
    assert status == 200
    web = {"X-Consul-Token": token["SecretID"]}
    status, _, _ = acl_server.request(
        "PUT", "/v1/agent/service/register", {"Name": "web", "Port": 80}, web
    )
    assert status == 200
    status, text, _ = acl_server.request(
        "PUT", "/v1/agent/service/register", {"Name": "db", "Port": 80}, web
    )
    assert (status, text) == (
        403,
        f"Permission denied: token with AccessorID '{token['AccessorID']}' lacks permission "
        "'service:write' on \"db\"\n",
    )


def test_token_updates_keep_the_secret_and_deletes_answer_true(acl_server: ServerProcess) -> None:
    root = acl_server.put("/v1/acl/bootstrap")["SecretID"]
    mgmt = {"X-Consul-Token": root}
    _, made, _ = acl_server.request("PUT", "/v1/acl/token", {"Description": "a"}, mgmt)
    path = f"/v1/acl/token/{made['AccessorID']}"
    status, updated, _ = acl_server.request("PUT", path, {"Description": "b"}, mgmt)
    assert status == 200 and updated["SecretID"] == made["SecretID"]
    assert updated["Description"] == "b" and updated["CreateIndex"] == made["CreateIndex"]
    status, text, _ = acl_server.request("PUT", path, {"SecretID": str(uuid.uuid4())}, mgmt)
    assert status == 400 and "SecretID is not permitted" in text
    assert acl_server.request("DELETE", path, None, mgmt)[:2] == (200, True)
    assert acl_server.request("GET", path, None, mgmt)[:2] == (
        404,
        "Requested token does not exist\n",
    )
    assert acl_server.request("DELETE", path, None, mgmt)[:2] == (
        404,
        "Cannot find token to delete\n",
    )
    # the deleted token's secret no longer works anywhere
    gone = {"X-Consul-Token": made["SecretID"]}
    assert acl_server.request("GET", "/v1/catalog/services", None, gone)[:2] == (
        403,
        "ACL not found\n",
    )


def test_a_malformed_policy_is_refused_with_the_field_named(acl_server: ServerProcess) -> None:
    mgmt = {"X-Consul-Token": acl_server.put("/v1/acl/bootstrap")["SecretID"]}
    status, text, _ = acl_server.request(
        "PUT", "/v1/acl/policy", {"Name": "bad", "Rules": 'service "web" { policy = "own" }'}, mgmt
    )
    assert status == 400 and "Rules" in text
    status, text, _ = acl_server.request("PUT", "/v1/acl/policy", {"Name": "x", "Rulez": ""}, mgmt)
    assert (status, text) == (400, "Policy: field 'Rulez': unknown field\n")


def test_the_initial_management_token_works_and_counts_as_the_bootstrap() -> None:
    secret = str(uuid.uuid4())
    with running_acl_server(secret) as server:
        me = _client(server, secret).acl.token.read_self()
        assert me["Description"] == "Initial Management Token"
        status, text, _ = server.request("PUT", "/v1/acl/bootstrap")
        assert status == 403 and "ACL bootstrap no longer allowed" in text


def test_acl_state_survives_a_restart_of_a_durable_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with running_acl_server(data_dir=tmp_path) as server:
        root = server.put("/v1/acl/bootstrap")["SecretID"]
    with running_acl_server(data_dir=tmp_path) as server:
        assert server.request("GET", "/v1/acl/token/self", None, {"X-Consul-Token": root})[0] == 200
        assert server.request("PUT", "/v1/acl/bootstrap")[0] == 403


def test_with_acls_off_the_acl_api_answers_acl_support_disabled(loom_server) -> None:  # type: ignore[no-untyped-def]
    assert loom_server.request("PUT", "/v1/acl/bootstrap")[:2] == (401, "ACL support disabled\n")
    assert loom_server.request("GET", "/v1/acl/tokens")[:2] == (401, "ACL support disabled\n")
    # and nothing else asks for a token
    status, _, _ = loom_server.request("GET", "/v1/agent/connect/ca/leaf/web")
    assert status == 200


def test_the_intention_default_follows_the_acl_default_policy(acl_server: ServerProcess) -> None:
    mgmt = {"X-Consul-Token": acl_server.put("/v1/acl/bootstrap")["SecretID"]}
    path = "/v1/connect/intentions/check?source=web&destination=db"
    assert acl_server.request("GET", path, None, mgmt)[1]["Allowed"] is False
    allow = start_server("--acl-default-policy", "allow")
    try:
        assert allow.get(path)["Allowed"] is True
    finally:
        allow.stop()
