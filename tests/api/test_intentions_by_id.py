"""Legacy intentions by ID, the L4 check and authorize with L7 intentions, against a real
`loom server` (raw HTTP: py-consul has no by-ID calls), with an ACL attacker and per-entry
indexes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import consul
import pytest

from tests.support.server import ServerProcess
from tests.support.server import acl_server as running_acl_server

LEGACY = {"SourceName": "web", "DestinationName": "db", "SourceType": "consul", "Action": "allow"}
L7 = {"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/api"}}]}


def _create(server: ServerProcess, body: dict[str, Any]) -> str:
    status, out, _ = server.request("POST", "/v1/connect/intentions", body)
    assert status == 200, out
    return str(uuid.UUID(out["ID"]))


def test_create_answers_a_uuid_that_reads_back_the_intention(loom_server) -> None:  # type: ignore[no-untyped-def]
    new_id = _create(loom_server, {**LEGACY, "Description": "web may call db"})
    got = loom_server.get(f"/v1/connect/intentions/{new_id}")
    assert (got["ID"], got["SourceName"], got["DestinationName"], got["Action"]) == (
        new_id, "web", "db", "allow",
    )  # fmt: skip
    assert got["Description"] == "web may call db" and got["Precedence"] == 9
    assert [i["ID"] for i in loom_server.get("/v1/connect/intentions")] == [new_id]
    exact = loom_server.get("/v1/connect/intentions/exact?source=web&destination=db")
    assert exact["ID"] == new_id
    entry = loom_server.get("/v1/config/service-intentions/db")
    assert entry["Sources"][0]["LegacyID"] == new_id


def test_a_duplicate_is_refused_however_the_first_was_made(loom_server) -> None:  # type: ignore[no-untyped-def]
    _create(loom_server, LEGACY)
    status, text, _ = loom_server.request("POST", "/v1/connect/intentions", {**LEGACY, "Action": "deny"})
    assert status == 409 and text.startswith("duplicate intention found: default/web => default/db")
    loom_server.put("/v1/connect/intentions/exact?source=api&destination=db", {"Action": "deny"})
    status, _, _ = loom_server.request("POST", "/v1/connect/intentions", {**LEGACY, "SourceName": "api"})
    assert status == 409
    assert loom_server.get("/v1/connect/intentions/check?source=web&destination=db")["Allowed"] is True


def test_update_by_id_keeps_the_id_and_the_create_index(loom_server) -> None:  # type: ignore[no-untyped-def]
    new_id = _create(loom_server, LEGACY)
    before = loom_server.get(f"/v1/connect/intentions/{new_id}")
    status, out, _ = loom_server.request(
        "PUT", f"/v1/connect/intentions/{new_id}", {**LEGACY, "Action": "deny"}
    )
    assert (status, out) == (200, {"ID": new_id})
    after = loom_server.get(f"/v1/connect/intentions/{new_id}")
    assert after["Action"] == "deny" and after["CreateIndex"] == before["CreateIndex"]
    assert after["ModifyIndex"] > before["ModifyIndex"]
    renamed = {**LEGACY, "SourceName": "api", "Action": "deny"}
    assert loom_server.request("PUT", f"/v1/connect/intentions/{new_id}", renamed)[0] == 200
    assert loom_server.get(f"/v1/connect/intentions/{new_id}")["SourceName"] == "api"


def test_update_cannot_move_the_destination_or_collide_with_another_source(loom_server) -> None:  # type: ignore[no-untyped-def]
    first = _create(loom_server, LEGACY)
    _create(loom_server, {**LEGACY, "SourceName": "api"})
    status, text, _ = loom_server.request(
        "PUT", f"/v1/connect/intentions/{first}", {**LEGACY, "DestinationName": "cache"}
    )
    assert status == 400 and "Cannot modify DestinationNS or DestinationName" in text
    status, text, _ = loom_server.request(
        "PUT", f"/v1/connect/intentions/{first}", {**LEGACY, "SourceName": "api"}
    )
    assert status == 409 and "duplicate intention found" in text
    assert loom_server.get(f"/v1/connect/intentions/{first}")["SourceName"] == "web"


def test_delete_by_id_and_unknown_or_malformed_ids(loom_server) -> None:  # type: ignore[no-untyped-def]
    new_id = _create(loom_server, LEGACY)
    assert loom_server.request("DELETE", f"/v1/connect/intentions/{new_id}")[:2] == (200, True)
    assert loom_server.request("GET", f"/v1/connect/intentions/{new_id}")[:2] == (
        404, "Intention not found\n",
    )  # fmt: skip
    assert loom_server.request("DELETE", f"/v1/connect/intentions/{new_id}")[0] == 404
    assert loom_server.request("PUT", f"/v1/connect/intentions/{new_id}", LEGACY)[0] == 404
    status, text, _ = loom_server.request("GET", "/v1/connect/intentions/not-a-uuid")
    assert status == 400 and "UUID" in text
    assert loom_server.request("GET", "/v1/config/service-intentions/db")[0] == 404


def test_rewriting_the_entry_by_config_or_by_name_keeps_the_id(loom_server) -> None:  # type: ignore[no-untyped-def]
    new_id = _create(loom_server, LEGACY)
    entry = {"Kind": "service-intentions", "Name": "db",
             "Sources": [{"Name": "web", "Action": "deny"}, {"Name": "api", "Action": "allow"}]}  # fmt: skip
    assert loom_server.put("/v1/config", entry) is True
    assert loom_server.get(f"/v1/connect/intentions/{new_id}")["Action"] == "deny"
    loom_server.put("/v1/connect/intentions/exact?source=web&destination=db", {"Action": "allow"})
    assert loom_server.get(f"/v1/connect/intentions/{new_id}")["Action"] == "allow"


def test_an_intention_s_indexes_move_only_when_its_entry_changes(loom_server) -> None:  # type: ignore[no-untyped-def]
    db = _create(loom_server, LEGACY)
    before = loom_server.get(f"/v1/connect/intentions/{db}")
    _create(loom_server, {**LEGACY, "DestinationName": "cache"})
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 80})
    after = loom_server.get(f"/v1/connect/intentions/{db}")
    assert (after["CreateIndex"], after["ModifyIndex"]) == (
        before["CreateIndex"], before["ModifyIndex"],
    )  # fmt: skip
    listed = {i["DestinationName"]: i for i in loom_server.get("/v1/connect/intentions")}
    assert listed["cache"]["CreateIndex"] > listed["db"]["ModifyIndex"]


# -- L7 intentions at L4 -------------------------------------------------------------------


def test_an_l7_intention_is_a_deny_to_the_l4_check_and_to_authorize(loom_server) -> None:  # type: ignore[no-untyped-def]
    c = consul.Consul(host=loom_server.http.rsplit(":", 1)[0], port=int(loom_server.http.rsplit(":", 1)[1]))
    entry = {"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", **L7}]}
    assert loom_server.put("/v1/config", entry) is True
    assert c.connect.intentions.check("web", "db") is False
    got = loom_server.get("/v1/connect/intentions/check?source=web&destination=db")
    assert got["Reason"].startswith("Matched L7 intention")
    td = loom_server.get("/v1/connect/ca/roots")["TrustDomain"]
    body = {"Target": "db", "ClientCertURI": f"spiffe://{td}/ns/default/dc/dc1/svc/web"}
    _, out, _ = loom_server.request("POST", "/v1/agent/connect/authorize", body)
    assert out["Authorized"] is False and out["Reason"].startswith("Matched L7 intention")
    matched = loom_server.get("/v1/connect/intentions/match?by=destination&name=db")["db"]
    assert [(i["SourceName"], i["Permissions"][0]["HTTP"]["PathPrefix"]) for i in matched] == [
        ("web", "/api")
    ]


def test_authorize_refuses_what_is_not_a_service_identity_as_consul_does(loom_server) -> None:  # type: ignore[no-untyped-def]
    td = loom_server.get("/v1/connect/ca/roots")["TrustDomain"]
    cases = [
        ({"ClientCertURI": f"spiffe://{td}/ns/default/dc/dc1/svc/web"}, "Target service must be specified"),
        ({"Target": "db", "ClientCertURI": "https://example.com/x"}, "not a valid Connect identifier"),
        ({"Target": "db", "ClientCertURI": ""}, "not a valid Connect identifier"),
        ({"Target": "db", "ClientCertURI": f"spiffe://{td}/ns/a/b/dc/dc1/svc/web"}, "not a valid Connect identifier"),
        ({"Target": "db", "ClientCertURI": f"spiffe://{td}/agent/client/dc/dc1/id/x"}, "not a valid Service identifier"),
        ({"Target": "db", "ClientCertURI": f"spiffe://{td}"}, "not a valid Service identifier"),
    ]
    for body, words in cases:
        status, text, _ = loom_server.request("POST", "/v1/agent/connect/authorize", body)
        assert status == 400 and words in text, (body, status, text)
    foreign = {"Target": "db", "ClientCertURI": "spiffe://elsewhere.consul/ns/default/dc/dc1/svc/web"}
    status, out, _ = loom_server.request("POST", "/v1/agent/connect/authorize", foreign)
    assert status == 200 and out["Authorized"] is False


# -- ACLs ------------------------------------------------------------------------------------

ROOT = str(uuid.uuid4())


@pytest.fixture(scope="module")
def acl_server() -> Iterator[tuple[ServerProcess, str, str]]:
    mgmt = {"X-Consul-Token": ROOT}
    with running_acl_server(ROOT) as server:
        rules = 'service "a" { policy = "write" intentions = "write" }\n'
        assert server.request("PUT", "/v1/acl/policy", {"Name": "a", "Rules": rules}, mgmt)[0] == 200
        _, token, _ = server.request("PUT", "/v1/acl/token", {"Policies": [{"Name": "a"}]}, mgmt)
        _, on_b, _ = server.request(
            "POST", "/v1/connect/intentions", {**LEGACY, "DestinationName": "b"}, mgmt
        )
        yield server, token["SecretID"], on_b["ID"]


def test_an_intention_on_b_by_id_is_refused_to_a_token_for_a(acl_server) -> None:  # type: ignore[no-untyped-def]
    server, user, on_b = acl_server
    as_user = {"X-Consul-Token": user}
    for method, body in (("GET", None), ("PUT", {**LEGACY, "DestinationName": "b"}), ("DELETE", None)):
        status, text, _ = server.request(method, f"/v1/connect/intentions/{on_b}", body, as_user)
        assert status == 403 and "on \"b\"" in text, (method, status, text)
        assert server.request(method, f"/v1/connect/intentions/{on_b}", body)[0] == 403
        bad = server.request(method, f"/v1/connect/intentions/{on_b}", body, {"X-Consul-Token": "x"})
        assert bad[:2] == (403, "ACL not found\n")
    got = server.request("GET", f"/v1/connect/intentions/{on_b}", None, {"X-Consul-Token": ROOT})
    assert got[1]["Action"] == "allow"  # nothing was changed or deleted


def test_a_token_for_a_manages_its_own_intention_by_id_but_cannot_move_it_to_b(acl_server) -> None:  # type: ignore[no-untyped-def]
    server, user, _ = acl_server
    as_user = {"X-Consul-Token": user}
    status, out, _ = server.request(
        "POST", "/v1/connect/intentions", {**LEGACY, "DestinationName": "a"}, as_user
    )
    assert status == 200
    mine = out["ID"]
    status, _, _ = server.request(
        "PUT", f"/v1/connect/intentions/{mine}", {**LEGACY, "DestinationName": "b"}, as_user
    )
    assert status == 403
    assert server.request("GET", f"/v1/connect/intentions/{mine}", None, as_user)[0] == 200
    assert server.request("DELETE", f"/v1/connect/intentions/{mine}", None, as_user)[:2] == (200, True)
