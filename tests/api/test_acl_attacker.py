"""An attacker against a real `loom server --acl-default-policy deny`, next to the user.

The user holds a token for service ``a`` (a policy: write on ``a`` and its intentions, read on
nodes); the attacker has no token, a garbage token, or that same token used for ``b``. Each
attempt gets a 403 with Consul's text and nothing is written (checked with the management
token); the user's own requests go through. Reads of ``b`` come back empty and marked
``X-Consul-Results-Filtered-By-ACLs: true``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
A_RULES = """
service "a" { policy = "write" intentions = "write" }
service "a-sidecar-proxy" { policy = "write" }
node_prefix "" { policy = "read" }
"""
FILTERED = "X-Consul-Results-Filtered-By-ACLs"


class Mesh:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        mgmt = {"X-Consul-Token": ROOT}
        status, _, _ = server.request(
            "PUT", "/v1/acl/policy", {"Name": "a", "Rules": A_RULES}, mgmt
        )
        assert status == 200
        status, token, _ = server.request(
            "PUT", "/v1/acl/token", {"Policies": [{"Name": "a"}]}, mgmt
        )
        assert status == 200
        self.a_secret, self.a_accessor = token["SecretID"], token["AccessorID"]
        for name in ("a", "b"):
            body = {"Name": name, "Port": 8080, "Check": {"TTL": "30s", "Status": "passing"}}
            assert server.request("PUT", "/v1/agent/service/register", body, mgmt)[0] == 200

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"X-Consul-Token": token} if token is not None else {}
        return self.server.request(method, path, body, headers)

    def as_root(self, method: str, path: str, body: Any = None) -> Any:
        status, out, _ = self.call(method, path, body, ROOT)
        assert status == 200, (path, status, out)
        return out

    def denied(self, permission: str, name: str, accessor: str | None = None) -> str:
        who = f"token with AccessorID '{accessor or self.a_accessor}'"
        return f"Permission denied: {who} lacks permission '{permission}' on \"{name}\"\n"


ANONYMOUS = "00000000-0000-0000-0000-000000000002"


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with acl_server(ROOT) as server:
        yield Mesh(server)


# -- the leaf certificate and its private key ------------------------------------------------


def test_no_token_gets_no_leaf(mesh: Mesh) -> None:
    status, text, _ = mesh.call("GET", "/v1/agent/connect/ca/leaf/b")
    assert (status, text) == (403, mesh.denied("service:write", "b", ANONYMOUS))


@pytest.mark.parametrize("where", ["header", "bearer", "query"])
def test_a_garbage_token_is_not_found_wherever_it_is_given(mesh: Mesh, where: str) -> None:
    garbage = str(uuid.uuid4())
    headers: dict[str, str] = {}
    path = "/v1/agent/connect/ca/leaf/b"
    if where == "header":
        headers["X-Consul-Token"] = garbage
    elif where == "bearer":
        headers["Authorization"] = f"Bearer {garbage}"
    else:
        path += f"?token={garbage}"
    assert mesh.server.request("GET", path, None, headers)[:2] == (403, "ACL not found\n")


def test_a_token_for_a_gets_a_leaf_for_a_but_not_for_b(mesh: Mesh) -> None:
    status, leaf, _ = mesh.call("GET", "/v1/agent/connect/ca/leaf/a", token=mesh.a_secret)
    assert status == 200 and leaf["Service"] == "a" and "PRIVATE KEY" in leaf["PrivateKeyPEM"]
    status, text, _ = mesh.call("GET", "/v1/agent/connect/ca/leaf/b", token=mesh.a_secret)
    assert (status, text) == (403, mesh.denied("service:write", "b"))


def test_the_bearer_and_query_forms_carry_a_real_token_too(mesh: Mesh) -> None:
    path = "/v1/agent/connect/ca/leaf/a"
    bearer = {"Authorization": f"Bearer {mesh.a_secret}"}
    assert mesh.server.request("GET", path, None, bearer)[0] == 200
    assert mesh.server.request("GET", f"{path}?token={mesh.a_secret}")[0] == 200


# -- registrations -------------------------------------------------------------------------------


def test_registering_b_with_a_token_for_a_is_refused_and_writes_nothing(mesh: Mesh) -> None:
    before = mesh.as_root("GET", "/v1/agent/service/b")
    body = {"Name": "b", "Port": 6666, "Address": "10.6.6.6"}
    status, text, _ = mesh.call("PUT", "/v1/agent/service/register", body, mesh.a_secret)
    assert (status, text) == (403, mesh.denied("service:write", "b"))
    status, _, _ = mesh.call("PUT", "/v1/agent/service/register", body)
    assert status == 403
    assert mesh.as_root("GET", "/v1/agent/service/b") == before


def test_a_sidecar_for_b_is_refused_to_a_token_for_a(mesh: Mesh) -> None:
    body = {
        "Name": "a-sidecar-proxy",
        "Kind": "connect-proxy",
        "Port": 21000,
        "Proxy": {"DestinationServiceName": "b"},
    }
    status, text, _ = mesh.call("PUT", "/v1/agent/service/register", body, mesh.a_secret)
    assert (status, text) == (403, mesh.denied("service:write", "b"))
    assert mesh.call("GET", "/v1/agent/service/a-sidecar-proxy", token=ROOT)[0] == 404


def test_catalog_registration_needs_node_write(mesh: Mesh) -> None:
    body = {"Node": "evil", "Address": "10.6.6.6", "Service": {"Service": "a", "Port": 1}}
    status, text, _ = mesh.call("PUT", "/v1/catalog/register", body, mesh.a_secret)
    assert (status, text) == (403, mesh.denied("node:write", "evil"))
    assert "evil" not in [n["Node"] for n in mesh.as_root("GET", "/v1/catalog/nodes")]


def test_deregistering_b_or_failing_its_check_is_refused(mesh: Mesh) -> None:
    status, text, _ = mesh.call("PUT", "/v1/agent/service/deregister/b", None, mesh.a_secret)
    assert (status, text) == (403, mesh.denied("service:write", "b"))
    status, text, _ = mesh.call("PUT", "/v1/agent/check/fail/service:b", b"", mesh.a_secret)
    assert (status, text) == (403, mesh.denied("service:write", "b"))
    [entry] = mesh.as_root("GET", "/v1/health/service/b")
    assert entry["Checks"][0]["Status"] == "passing"


def test_the_user_registers_and_deregisters_a(mesh: Mesh) -> None:
    body = {"Name": "a", "ID": "a-2", "Port": 8081}
    assert mesh.call("PUT", "/v1/agent/service/register", body, mesh.a_secret)[0] == 200
    assert mesh.call("PUT", "/v1/agent/service/deregister/a-2", None, mesh.a_secret)[0] == 200


# -- intentions -------------------------------------------------------------------------------------


def test_writing_an_intention_on_b_is_refused_and_writes_nothing(mesh: Mesh) -> None:
    path = "/v1/connect/intentions/exact?source=a&destination=b"
    status, text, _ = mesh.call("PUT", path, {"Action": "allow"}, mesh.a_secret)
    assert (status, text) == (
        403,
        mesh.denied("intention:write", "b"),
    )
    legacy = {"SourceName": "*", "DestinationName": "b", "Action": "allow"}
    assert mesh.call("POST", "/v1/connect/intentions", legacy, mesh.a_secret)[0] == 403
    entry = {
        "Kind": "service-intentions",
        "Name": "b",
        "Sources": [{"Name": "*", "Action": "allow"}],
    }
    assert mesh.call("PUT", "/v1/config", entry, mesh.a_secret)[0] == 403
    assert mesh.as_root("GET", "/v1/connect/intentions") == []


def test_the_user_writes_and_reads_an_intention_on_a(mesh: Mesh) -> None:
    path = "/v1/connect/intentions/exact?source=b&destination=a"
    assert mesh.call("PUT", path, {"Action": "allow"}, mesh.a_secret)[0] == 200
    try:
        status, got, _ = mesh.call("GET", path, token=mesh.a_secret)
        assert status == 200 and got["Action"] == "allow"
        assert mesh.call("GET", path)[0] == 403  # anonymous may not read it
    finally:
        assert mesh.call("DELETE", path, None, mesh.a_secret)[0] == 200


# -- filtered reads ----------------------------------------------------------------------------------


def test_reading_b_health_with_a_token_for_a_is_filtered_empty(mesh: Mesh) -> None:
    status, entries, headers = mesh.call("GET", "/v1/health/service/b", token=mesh.a_secret)
    assert (status, entries, headers.get(FILTERED)) == (200, [], "true")
    status, entries, headers = mesh.call("GET", "/v1/health/service/a", token=mesh.a_secret)
    assert status == 200 and [e["Service"]["Service"] for e in entries] == ["a"]
    assert FILTERED not in headers
    status, entries, headers = mesh.call("GET", "/v1/health/service/b", token=ROOT)
    assert len(entries) == 1 and FILTERED not in headers


def test_lists_show_only_what_the_token_may_read(mesh: Mesh) -> None:
    status, services, headers = mesh.call("GET", "/v1/catalog/services", token=mesh.a_secret)
    assert status == 200 and sorted(services) == ["a"] and headers.get(FILTERED) == "true"
    status, services, headers = mesh.call("GET", "/v1/agent/services", token=mesh.a_secret)
    assert sorted(services) == ["a"] and headers.get(FILTERED) == "true"
    status, services, headers = mesh.call("GET", "/v1/catalog/services")
    assert (status, services, headers.get(FILTERED)) == (200, {}, "true")
    assert mesh.call("GET", "/v1/agent/service/b", token=mesh.a_secret)[0] == 403


def test_the_dns_table_lists_only_readable_services(mesh: Mesh) -> None:
    status, table, headers = mesh.call("GET", "/v1/loom/dns-table", token=mesh.a_secret)
    assert status == 200 and headers.get(FILTERED) == "true"
    assert [s["Name"] for s in table["Services"]] == ["a"]
    everything = mesh.as_root("GET", "/v1/loom/dns-table")
    assert sorted(s["Name"] for s in everything["Services"]) == ["a", "b"]


def test_the_acl_api_is_closed_to_a_service_token(mesh: Mesh) -> None:
    status, text, _ = mesh.call(
        "PUT",
        "/v1/acl/token",
        {"Policies": [{"ID": "00000000-0000-0000-0000-000000000001"}]},
        mesh.a_secret,
    )
    assert (status, text) == (
        403,
        f"Permission denied: token with AccessorID '{mesh.a_accessor}' lacks permission 'acl:write'\n",
    )
    assert len(mesh.as_root("GET", "/v1/acl/tokens")) == 3  # anonymous, root, a
