"""``/v1/txn`` with Consul's ``Node``, ``Service`` and ``Check`` ops on a real `loom server`:
py-consul's ``txn.put`` for the user's calls, raw HTTP for the attacker's.

A transaction is all-or-nothing across KV and the catalog; ``cas``/``delete-cas`` compare
the per-entry ModifyIndex; errors are Consul's 409 ``Errors`` list. Under
``--acl-default-policy deny`` each op is vetted as Consul vets it: no token, a garbage token
and another service's token fail the transaction at the refused op, and nothing is written.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import consul
import pytest

from tests.support.server import ServerProcess, acl_server


def _client(server: ServerProcess, token: str | None = None) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port), token=token)


def _node(verb: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"Node": {"Verb": verb, "Node": {"Node": name, "Address": "10.7.0.1", **extra}}}


def _svc(verb: str, node: str, sid: str, name: str = "tx", **extra: Any) -> dict[str, Any]:
    return {"Service": {"Verb": verb, "Node": node,
                        "Service": {"ID": sid, "Service": name, "Port": 8080, **extra}}}  # fmt: skip


def _check(verb: str, node: str, cid: str, sid: str = "", **extra: Any) -> dict[str, Any]:
    body = {"Node": node, "CheckID": cid, "Name": cid, "Status": "passing", "ServiceID": sid}
    return {"Check": {"Verb": verb, "Check": {**body, **extra}}}


def _kv(verb: str, key: str, value: bytes = b"", **extra: Any) -> dict[str, Any]:
    return {"KV": {"Verb": verb, "Key": key, "Value": base64.b64encode(value).decode(), **extra}}


def test_a_node_its_service_its_check_and_a_key_are_written_in_one_transaction(
    loom_server: ServerProcess,
) -> None:
    c = _client(loom_server)
    out = c.txn.put([_node("set", "tx1"), _svc("set", "tx1", "tx-1"),
                     _check("set", "tx1", "tx-1-up", "tx-1"), _kv("set", "tx/k", b"v")])  # fmt: skip
    [node, svc, check, kv] = out["Results"]
    assert node["Node"]["Node"] == "tx1" and node["Node"]["Address"] == "10.7.0.1"
    assert svc["Service"]["ID"] == "tx-1" and svc["Service"]["Port"] == 8080
    assert check["Check"]["ServiceName"] == "tx" and check["Check"]["Status"] == "passing"
    assert kv["KV"]["Key"] == "tx/k"
    index = svc["Service"]["ModifyIndex"]
    assert {node["Node"]["CreateIndex"], check["Check"]["ModifyIndex"], kv["KV"]["ModifyIndex"]} == {
        index
    }
    _, [entry] = c.health.service("tx")
    assert entry["Node"]["Node"] == "tx1" and [x["CheckID"] for x in entry["Checks"]] == ["tx-1-up"]
    assert c.kv.get("tx/k")[1]["Value"] == b"v"
    got = c.txn.put([_svc("get", "tx1", "tx-1"), _node("get", "tx1"), _check("get", "tx1", "tx-1-up")])
    assert got["Results"][0]["Service"]["ModifyIndex"] == index


def test_a_failed_catalog_op_writes_none_of_the_transaction(loom_server: ServerProcess) -> None:
    c = _client(loom_server)
    status, out, _ = loom_server.request("PUT", "/v1/txn", [
        _kv("set", "tx/none", b"x"), _node("set", "tx2"), _svc("set", "tx-missing-node", "tx-2"),
    ])  # fmt: skip
    assert status == 409
    assert out == {"Results": None,
                   "Errors": [{"OpIndex": 2, "What": "Missing node registration"}]}  # fmt: skip
    assert c.kv.get("tx/none")[1] is None
    _, nodes = c.catalog.nodes()
    assert "tx2" not in {n["Node"] for n in nodes}


def test_cas_and_delete_cas_compare_the_entrys_modify_index(loom_server: ServerProcess) -> None:
    c = _client(loom_server)
    created = c.txn.put([_node("set", "tx3"), _svc("cas", "tx3", "tx-3", ModifyIndex=0)])
    index = created["Results"][1]["Service"]["ModifyIndex"]
    status, out, _ = loom_server.request("PUT", "/v1/txn", [_svc("cas", "tx3", "tx-3")])
    assert status == 409 and out["Errors"] == [
        {"OpIndex": 0, "What": 'failed to set service "tx-3" on node "tx3", index is stale'}
    ]
    moved = c.txn.put([_svc("cas", "tx3", "tx-3", Tags=["v2"], ModifyIndex=index)])
    assert moved["Results"][0]["Service"]["Tags"] == ["v2"]
    assert moved["Results"][0]["Service"]["CreateIndex"] == index
    status, out, _ = loom_server.request(
        "PUT", "/v1/txn", [_svc("delete-cas", "tx3", "tx-3", ModifyIndex=index)]
    )
    assert status == 409 and "failed to delete service" in out["Errors"][0]["What"]
    c.txn.put([_node("delete", "tx3")])  # a node's deletion takes its services along
    _, left = c.catalog.service("tx")
    assert "tx-3" not in {s["ServiceID"] for s in left}


def test_a_get_of_what_does_not_exist_fails_in_consuls_words(loom_server: ServerProcess) -> None:
    status, out, _ = loom_server.request("PUT", "/v1/txn", [
        _node("get", "nowhere"), _check("get", "nowhere", "nothing"),
    ])  # fmt: skip
    assert status == 409 and out["Errors"] == [
        {"OpIndex": 0, "What": 'node "nowhere" doesn\'t exist'},
        {"OpIndex": 1, "What": 'check "nothing" on node "nowhere" doesn\'t exist'},
    ]


@pytest.mark.parametrize(
    "body",
    [
        [{"Node": {"Verb": "explode", "Node": {"Node": "n"}}}],
        [{"Node": {"Verb": "set", "Node": {"Node": "bad node!", "Address": "10.0.0.1"}}}],
        [{"Service": {"Verb": "set", "Service": {"ID": "x"}}}],
        [{"Check": {"Verb": "set", "Check": {"Node": "n"}}}],
        [{"Node": {"Verb": "set", "Node": "not an object"}}],
    ],
)
def test_hostile_catalog_ops_are_a_400_and_write_nothing(
    loom_server: ServerProcess, body: Any
) -> None:
    before = loom_server.get("/v1/catalog/nodes")
    status, _, _ = loom_server.request("PUT", "/v1/txn", body)
    assert status == 400
    assert loom_server.get("/v1/catalog/nodes") == before


def test_a_hostile_service_body_fails_its_op_with_the_registration_rules(
    loom_server: ServerProcess,
) -> None:
    loom_server.request("PUT", "/v1/txn", [_node("set", "tx4")])
    status, out, _ = loom_server.request(
        "PUT", "/v1/txn", [_svc("set", "tx4", "tx-4", Kind="connect-proxy", Port=0)]
    )
    assert status == 409 and "Service.Proxy: is required" in out["Errors"][0]["What"]


# -- the attacker, under ACL deny -------------------------------------------------------------

ROOT = str(uuid.uuid4())
RULES = """
service "tx-web" { policy = "write" }
node_prefix "" { policy = "read" }
key_prefix "web/" { policy = "write" }
"""


class Acl:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.call("PUT", "/v1/acl/policy", {"Name": "web", "Rules": RULES}, ROOT)
        token = self.call("PUT", "/v1/acl/token", {"Policies": [{"Name": "web"}]}, ROOT)[1]
        self.web = token["SecretID"]
        self.call("PUT", "/v1/txn", [_node("set", "acl1"), _svc("set", "acl1", "db-1", "tx-db"),
                                     _check("set", "acl1", "db-up", "db-1")], ROOT)  # fmt: skip

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"X-Consul-Token": token} if token is not None else {}
        return self.server.request(method, path, body, headers)

    def catalog(self) -> Any:
        return self.call("GET", "/v1/catalog/service/tx-db", token=ROOT)[1]


@pytest.fixture(scope="module")
def acl() -> Iterator[Acl]:
    with acl_server(ROOT) as server:
        yield Acl(server)


@pytest.mark.parametrize("token", [None, "garbage", "web"])
def test_a_token_without_service_write_cannot_touch_another_service(
    acl: Acl, token: str | None
) -> None:
    secret = acl.web if token == "web" else (str(uuid.uuid4()) if token else None)
    before = acl.catalog()
    for ops in ([_svc("delete", "acl1", "db-1", "tx-db")],
                [_svc("set", "acl1", "db-1", "tx-db", Port=1)],
                [_kv("set", "web/ok", b"1"), _check("delete", "acl1", "db-up", "db-1")],
                [_svc("set", "acl1", "evil", "tx-web", Kind="connect-proxy", Port=21000,
                      Proxy={"DestinationServiceName": "tx-db"})]):  # fmt: skip
        status, out, _ = acl.call("PUT", "/v1/txn", ops, secret)
        if token == "garbage":
            assert status == 403 and "ACL not found" in out
            continue
        assert status == 409, (ops, out)
        assert {"OpIndex": len(ops) - 1, "What": "Permission denied"} in out["Errors"]
    assert acl.catalog() == before
    assert acl.call("GET", "/v1/kv/web/ok", token=ROOT)[0] == 404


def test_a_service_token_writes_its_own_service_on_a_node_it_may_read(acl: Acl) -> None:
    status, out, _ = acl.call("PUT", "/v1/txn", [_svc("set", "acl1", "web-1", "tx-web")], acl.web)
    assert status == 200, out
    # but it may not register the node itself (node:write)
    status, out, _ = acl.call("PUT", "/v1/txn", [_node("set", "acl2")], acl.web)
    assert status == 409 and out["Errors"] == [{"OpIndex": 0, "What": "Permission denied"}]
