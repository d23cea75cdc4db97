"""Prepared-query failover with ACLs on (default deny) in two federated datacenters: the other
datacenter filters what it answers by its own view of the caller's token (or of the query's
Token), so failing over gains an attacker nothing: a token whose reads are limited to dc1, a
dc1-local token, no token and a forged token all get nothing from dc2, and the endpoint the
failover calls refuses or filters a caller that reaches it directly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.federation import federated, until_blocking
from tests.support.server import ServerProcess, acl_flags

MANAGEMENT = str(uuid.uuid4())
M = {"X-Consul-Token": MANAGEMENT}
READ_ALL = 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
REMOTE = "/v1/loom/query/execute-remote"


class Fed:
    def __init__(self, dc1: ServerProcess, dc2: ServerProcess) -> None:
        self.dc1, self.dc2 = dc1, dc2
        self.tokens: dict[str, str] = {}
        self.query = ""


def _ok(server: ServerProcess, method: str, path: str, body: Any = None) -> Any:
    status, out, _ = server.request(method, path, body, headers=M)
    assert status == 200, (path, status, out)
    return out


def _token(fed: Fed, name: str, rules: str, datacenters: list[str], local: bool) -> str:
    policy = _ok(fed.dc1, "PUT", "/v1/acl/policy",
                 {"Name": name, "Rules": rules, "Datacenters": datacenters})  # fmt: skip
    token = _ok(fed.dc1, "PUT", "/v1/acl/token",
                {"Policies": [{"ID": policy["ID"]}], "Local": local})  # fmt: skip
    if not local:
        until_blocking(fed.dc2, "/v1/acl/tokens", lambda ts: any(
            t["AccessorID"] == token["AccessorID"] for t in ts), headers=M)  # fmt: skip
    secret: str = token["SecretID"]
    return secret


@pytest.fixture(scope="module")
def fed() -> Iterator[Fed]:
    acl = acl_flags(MANAGEMENT)
    with federated(("dc1", "dc2"), *acl, replication_token=MANAGEMENT, headers=M) as (dc1, dc2):
        f = Fed(dc1, dc2)
        _ok(dc2, "PUT", "/v1/catalog/register", {
            "Node": "b1", "Address": "10.8.0.1",
            "Service": {"Service": "secret-db", "ID": "db-1", "Port": 5432},
        })  # fmt: skip
        f.tokens["dc1-only"] = _token(f, "read-in-dc1", READ_ALL, ["dc1"], local=False)
        f.tokens["local"] = _token(f, "read-all-local", READ_ALL, [], local=True)
        f.tokens["everywhere"] = _token(f, "read-all", READ_ALL, [], local=False)
        body = {"Name": "db", "Service": {"Service": "secret-db",
                                          "Failover": {"Datacenters": ["dc2"]}}}  # fmt: skip
        f.query = _ok(dc1, "POST", "/v1/query", body)["ID"]
        yield f


def _execute(fed: Fed, token: str | None, path: str = "") -> tuple[int, Any, dict[str, str]]:
    headers = {} if token is None else {"X-Consul-Token": token}
    return fed.dc1.request("GET", path or f"/v1/query/{fed.query}/execute", headers=headers)


def test_a_token_that_reads_everywhere_gets_dc2s_results(fed: Fed) -> None:
    for token in (MANAGEMENT, fed.tokens["everywhere"]):
        status, got, _ = _execute(fed, token)
        assert status == 200, got
        assert (got["Datacenter"], got["Failovers"]) == ("dc2", 1)
        assert [n["Service"]["ID"] for n in got["Nodes"]] == ["db-1"]


@pytest.mark.parametrize("who", ["dc1-only", "local", "anonymous"])
def test_a_token_without_service_read_in_dc2_gets_nothing_from_dc2(fed: Fed, who: str) -> None:
    token = None if who == "anonymous" else fed.tokens[who]
    status, got, headers = _execute(fed, token)
    assert status == 200, got
    assert got["Nodes"] == [] and got["Failovers"] == 1
    if who == "local":  # dc2 does not know it (ACL not found): dc1's own empty answer
        assert got["Datacenter"] == "dc1"
    else:  # dc2 answered, filtered by its rules for the token
        assert got["Datacenter"] == "dc2"
        assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
    assert "secret-db" not in str(got["Nodes"]) and "10.8.0.1" not in str(got)


def test_a_query_token_lets_its_callers_see_what_it_sees_in_dc2_too(fed: Fed) -> None:
    body = {"Name": "db-with-token", "Token": fed.tokens["everywhere"],
            "Service": {"Service": "secret-db", "Failover": {"NearestN": 1}}}  # fmt: skip
    qid = _ok(fed.dc1, "POST", "/v1/query", body)["ID"]
    status, got, _ = _execute(fed, None, f"/v1/query/{qid}/execute")
    assert status == 200 and [n["Node"]["Node"] for n in got["Nodes"]] == ["b1"]


def _remote(fed: Fed, query: dict[str, Any], token: str | None) -> tuple[int, Any]:
    headers = {} if token is None else {"X-Consul-Token": token}
    body = {"Query": {"Service": {"Service": "secret-db"}, **query}, "Limit": 0}
    status, out, _ = fed.dc2.request("POST", REMOTE, body, headers=headers)
    return status, out


@pytest.mark.parametrize(
    ("query", "token", "status"),
    [
        ({}, None, 200),  # anonymous: filtered to nothing
        ({}, "garbage", 403),
        ({}, str(uuid.uuid4()), 403),
        ({"Token": str(uuid.uuid4())}, None, 403),  # a forged query Token: ACL not found
        ({"Token": "x"}, "garbage", 403),
    ],
)
def test_calling_the_failover_endpoint_directly_gains_nothing(
    fed: Fed, query: dict[str, Any], token: str | None, status: int
) -> None:
    got_status, out = _remote(fed, query, token)
    assert got_status == status, out
    if status == 200:
        assert out["Nodes"] == []
    assert "10.8.0.1" not in str(out)
    # the control: a token that may read gets the instance through the same endpoint
    assert _remote(fed, {}, fed.tokens["everywhere"])[1]["Nodes"][0]["Node"]["Node"] == "b1"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"Query": 1}', b'{"Query": {}}', b'{"Query": {"Service": {}}}',
     b'{"Query": {"Service": {"Service": "x"}}, "Limit": -1}'],
)  # fmt: skip
def test_a_malformed_failover_request_is_a_400(fed: Fed, body: bytes) -> None:
    status, _, _ = fed.dc2.request("POST", REMOTE, body, headers=M)
    assert status == 400
