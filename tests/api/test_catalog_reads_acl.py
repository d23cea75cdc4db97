"""An attacker against the catalog and health reads by node and state, ACLs on (default deny).

The user's token reads service ``a`` and every node; another token reads ``a`` but no node.
The attacker has no token, a garbage one, or the user's token used to read ``b``. What a token
may not read is left out and the answer is marked ``X-Consul-Results-Filtered-By-ACLs``; a
gateway's services need ``service:read`` on the gateway (a 403 otherwise, as Consul's RPC).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
FILTERED = "X-Consul-Results-Filtered-By-ACLs"
NODE = "loom-server"
READ_A = 'service "a" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
READ_A_NO_NODE = 'service "a" { policy = "read" }\n'


def _token(server: ServerProcess, name: str, rules: str) -> tuple[str, str]:
    mgmt = {"X-Consul-Token": ROOT}
    assert server.request("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules}, mgmt)[0] == 200
    status, token, _ = server.request("PUT", "/v1/acl/token", {"Policies": [{"Name": name}]}, mgmt)
    assert status == 200
    return token["SecretID"], token["AccessorID"]


class Mesh:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        for name in ("a", "b"):
            body = {"Name": name, "Port": 8080, "Check": {"TTL": "30s", "Status": "passing"},
                    "Connect": {"SidecarService": {}}}  # fmt: skip
            status, _, _ = server.request(
                "PUT", "/v1/agent/service/register", body, {"X-Consul-Token": ROOT}
            )
            assert status == 200
        self.user, _ = _token(server, "read-a", READ_A)
        self.no_node, _ = _token(server, "read-a-only", READ_A_NO_NODE)

    def get(self, path: str, token: str | None = None) -> tuple[int, Any, dict[str, str]]:
        headers = {"X-Consul-Token": token} if token is not None else {}
        return self.server.request("GET", path, None, headers)


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with acl_server(ROOT) as server:
        yield Mesh(server)


PATHS = (
    f"/v1/catalog/node/{NODE}",
    f"/v1/catalog/node-services/{NODE}",
    "/v1/catalog/connect/a",
    f"/v1/health/node/{NODE}",
    "/v1/health/state/any",
)


@pytest.mark.parametrize("path", [*PATHS, "/v1/catalog/gateway-services/a"])
def test_a_garbage_token_is_refused_on_every_new_read(mesh: Mesh, path: str) -> None:
    status, text, _ = mesh.get(path, "not-a-token")
    assert (status, text) == (403, "ACL not found\n")


def test_no_token_reads_nothing_and_is_told_it_was_filtered(mesh: Mesh) -> None:
    status, node, headers = mesh.get(f"/v1/catalog/node/{NODE}")
    assert (status, node, headers.get(FILTERED)) == (200, None, "true")
    _, listed, headers = mesh.get(f"/v1/catalog/node-services/{NODE}")
    assert listed == {"Node": None, "Services": []} and headers.get(FILTERED) == "true"
    for path in ("/v1/catalog/connect/a", f"/v1/health/node/{NODE}", "/v1/health/state/any"):
        status, found, headers = mesh.get(path)
        assert (status, found, headers.get(FILTERED)) == (200, [], "true"), path


def test_a_token_for_a_sees_a_and_not_b_on_the_node(mesh: Mesh) -> None:
    _, node, headers = mesh.get(f"/v1/catalog/node/{NODE}", mesh.user)
    assert set(node["Services"]) == {"a"} and headers.get(FILTERED) == "true"
    _, listed, _ = mesh.get(f"/v1/catalog/node-services/{NODE}", mesh.user)
    assert [s["ID"] for s in listed["Services"]] == ["a"]
    _, checks, headers = mesh.get(f"/v1/health/node/{NODE}", mesh.user)
    assert [c["ServiceName"] for c in checks] == ["a"] and headers.get(FILTERED) == "true"
    _, checks, _ = mesh.get("/v1/health/state/passing", mesh.user)
    assert [c["ServiceName"] for c in checks] == ["a"]


def test_a_token_for_a_reads_no_connect_endpoint_of_b(mesh: Mesh) -> None:
    status, found, headers = mesh.get("/v1/catalog/connect/b", mesh.user)
    assert (status, found, headers.get(FILTERED)) == (200, [], "true")
    _, found, headers = mesh.get("/v1/catalog/connect/a", mesh.user)
    # a's sidecar is the service a-sidecar-proxy, which this token may not read.
    assert found == [] and headers.get(FILTERED) == "true"
    _, found, _ = mesh.get("/v1/catalog/connect/a", ROOT)
    assert [n["ServiceID"] for n in found] == ["a-sidecar-proxy"]


def test_without_node_read_the_node_is_hidden_with_its_services(mesh: Mesh) -> None:
    _, node, headers = mesh.get(f"/v1/catalog/node/{NODE}", mesh.no_node)
    assert node is None and headers.get(FILTERED) == "true"
    _, checks, _ = mesh.get(f"/v1/health/node/{NODE}", mesh.no_node)
    assert checks == []


def test_the_services_of_a_gateway_need_service_read_on_the_gateway(mesh: Mesh) -> None:
    assert mesh.get("/v1/catalog/gateway-services/a", mesh.user)[:2] == (200, [])
    status, text, _ = mesh.get("/v1/catalog/gateway-services/b", mesh.user)
    assert status == 403 and "lacks permission 'service:read' on \"b\"" in text
    status, _, _ = mesh.get("/v1/catalog/gateway-services/a")
    assert status == 403


def test_the_management_token_sees_everything_unfiltered(mesh: Mesh) -> None:
    _, node, headers = mesh.get(f"/v1/catalog/node/{NODE}", ROOT)
    assert set(node["Services"]) == {"consul", "a", "b", "a-sidecar-proxy", "b-sidecar-proxy"}
    assert FILTERED not in headers
