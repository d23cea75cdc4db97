"""Two datacenters with ACLs on (default deny): the federation endpoints refuse callers
without the right token, ``?dc=`` carries the caller's token and gains it nothing, hostile
states are refused, and ACL policies and tokens written in the primary work in the secondary."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.federation import Caller, federated, until_blocking
from tests.support.server import ServerProcess, acl_flags

MANAGEMENT = str(uuid.uuid4())
M = {"X-Consul-Token": MANAGEMENT}
ADMIN = Caller(M)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    acl = acl_flags(MANAGEMENT)
    with federated(("dc1", "dc2"), *acl, replication_token=MANAGEMENT, headers=M) as (dc1, dc2):
        yield dc1, dc2


FEDERATION_READS = [
    "/v1/internal/federation-states",
    "/v1/internal/federation-state/dc2",
    "/v1/internal/federation-states/mesh-gateways",
]


@pytest.mark.parametrize("path", FEDERATION_READS)
@pytest.mark.parametrize("token", [None, "", "garbage", str(uuid.uuid4())])
def test_federation_reads_refuse_a_missing_or_unknown_token(
    pair: Any, path: str, token: str | None
) -> None:
    dc1, _ = pair
    headers = {} if token is None else {"X-Consul-Token": token}
    status, body, _ = dc1.request("GET", path, headers=headers)
    assert status == 403 and "dc2" not in json.dumps(body)
    assert dc1.request("GET", path, headers=M)[0] == 200


def _evil(dc: str = "evil") -> dict[str, Any]:
    return {"Datacenter": dc, "Servers": ["203.0.113.9:8500"], "MeshGateways": [],
            "Services": [], "UpdatedAt": "2099-01-01T00:00:00.000000Z"}  # fmt: skip


@pytest.mark.parametrize("token", [None, "garbage", str(uuid.uuid4())])
def test_an_announce_without_operator_write_is_refused_and_writes_nothing(
    pair: Any, token: str | None
) -> None:
    dc1, _ = pair
    headers = {} if token is None else {"X-Consul-Token": token}
    status, _, _ = dc1.request("PUT", "/v1/internal/federation-state", _evil(), headers=headers)
    assert status == 403
    assert ADMIN.known(dc1) == {"dc1", "dc2"}
    status, _, _ = dc1.request(
        "PUT", "/v1/internal/federation-state", _evil("dc2"), headers=headers
    )
    assert status == 403
    assert ADMIN.get(dc1, "/v1/internal/federation-state/dc2")["State"]["Servers"] != [
        "203.0.113.9:8500"
    ]


HOSTILE = [
    b"not json",
    b"[]",
    json.dumps({**_evil(), "Extra": 1}).encode(),
    json.dumps({**_evil(), "Datacenter": "dc1"}).encode(),  # this DC's own name
    json.dumps({**_evil(), "Datacenter": "../x"}).encode(),
    json.dumps({**_evil(), "Servers": ["unix:/run/x.sock"]}).encode(),
    json.dumps({**_evil(), "Servers": ["x" * 300 + ":1"]}).encode(),
    json.dumps({**_evil(), "Services": [{"Name": "a", "Ports": [70000]}]}).encode(),
    json.dumps({**_evil(), "MeshGateways": [{"Address": "1.2.3.4", "Port": -1}]}).encode(),
    json.dumps({**_evil(), "Services": [{"Name": "a"}] * 2}).encode(),
]


@pytest.mark.parametrize("body", HOSTILE)
def test_a_hostile_federation_state_is_a_400_and_writes_nothing(pair: Any, body: bytes) -> None:
    dc1, _ = pair
    status, _, _ = dc1.request("PUT", "/v1/internal/federation-state", body, headers=M)
    assert status == 400
    assert ADMIN.known(dc1) == {"dc1", "dc2"}


def test_dc_forwarding_carries_the_callers_token_and_gains_it_nothing(pair: Any) -> None:
    dc1, _ = pair
    rules = 'key_prefix "" { policy = "write" }'
    policy = ADMIN.put(dc1, "/v1/acl/policy", {"Name": "kv-dc1", "Rules": rules})
    status, local, _ = dc1.request(
        "PUT", "/v1/acl/token",
        {"Policies": [{"ID": policy["ID"]}], "Local": True}, headers=M,
    )  # fmt: skip
    assert status == 200 and local["Local"] is True
    mine = {"X-Consul-Token": local["SecretID"]}
    assert dc1.request("PUT", "/v1/kv/mine", b"1", headers=mine)[0] == 200
    # the same request for dc2: dc2 does not know a local token of dc1
    status, body, _ = dc1.request("PUT", "/v1/kv/mine?dc=dc2", b"1", headers=mine)
    assert status == 403 and "ACL not found" in str(body)
    status, _, _ = dc1.request("GET", "/v1/kv/mine?dc=dc2", headers=mine)
    assert status == 403
    # no token at all: dc2's anonymous token, which may do nothing
    assert dc1.request("PUT", "/v1/kv/anon?dc=dc2", b"1")[0] == 403
    assert dc1.request("GET", "/v1/kv/anon?dc=dc2", headers=M)[0] == 404  # nothing written
    # management (replicated: the same in both) may
    assert dc1.request("PUT", "/v1/kv/mine?dc=dc2", b"2", headers=M)[0] == 200


def test_a_policy_and_token_written_in_the_primary_work_in_the_secondary(pair: Any) -> None:
    dc1, dc2 = pair
    policy = ADMIN.put(dc1, "/v1/acl/policy", {
        "Name": "web-writer", "Rules": 'service "web" { policy = "write" }'})  # fmt: skip
    token = ADMIN.put(dc1, "/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]})
    until_blocking(dc2, "/v1/acl/tokens", lambda ts: any(
        t["AccessorID"] == token["AccessorID"] for t in ts), headers=M)  # fmt: skip
    web = {"X-Consul-Token": token["SecretID"]}
    status, _, _ = dc2.request("PUT", "/v1/agent/service/register",
                               {"Name": "web", "Port": 80}, headers=web)  # fmt: skip
    assert status == 200
    status, _, _ = dc2.request("PUT", "/v1/agent/service/register",
                               {"Name": "other", "Port": 81}, headers=web)  # fmt: skip
    assert status == 403
    same = ADMIN.get(dc2, f"/v1/acl/policy/{policy['ID']}")
    assert same["Name"] == "web-writer"  # the primary's ID
    repl = dc2.get("/v1/acl/replication")
    assert repl["Enabled"] and repl["Running"] and repl["ReplicationType"] == "tokens"
    assert repl["SourceDatacenter"] == "dc1" and repl["ReplicatedTokenIndex"] > 0


def test_acl_writes_to_the_secondary_land_in_the_primary_and_read_back_at_once(
    pair: Any,
) -> None:
    dc1, dc2 = pair
    policy = ADMIN.put(dc2, "/v1/acl/policy", {"Name": "via-dc2", "Rules": ""})
    assert ADMIN.get(dc1, f"/v1/acl/policy/{policy['ID']}")["Name"] == "via-dc2"
    token = ADMIN.put(dc2, "/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]})
    assert dc2.request("GET", "/v1/acl/token/self",
                       headers={"X-Consul-Token": token["SecretID"]})[0] == 200  # fmt: skip
    local = ADMIN.put(dc2, "/v1/acl/token", {"Local": True, "Description": "dc2 only"})
    assert dc1.request("GET", f"/v1/acl/token/{local['AccessorID']}", headers=M)[0] == 404
    assert ADMIN.get(dc2, f"/v1/acl/token/{local['AccessorID']}")["Local"] is True
