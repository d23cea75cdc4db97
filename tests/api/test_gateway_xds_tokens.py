"""A mesh gateway's ADS stream and its ACL token, against a real `loom server
--acl-default-policy deny`: as Consul's, the token must ``service:write`` the gateway's own
service name. An attacker with no token, or with the token of a service the gateway routes
to, is refused with ``PERMISSION_DENIED`` and gets no resource; the gateway's token is served
its SNI listener."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from loom.xds.translate.names import TYPE_CLUSTER
from tests.api.test_xds_tokens import Stream, refused
from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
MGMT = {"X-Consul-Token": ROOT}
GATEWAY = {
    "Kind": "mesh-gateway", "Name": "mesh-gateway", "ID": "gw-1", "Port": 8443,
    "Address": "127.0.0.1",
    "TaggedAddresses": {"wan": {"Address": "198.51.100.1", "Port": 443}},
}  # fmt: skip


def token_for(server: ServerProcess, name: str) -> str:
    rules = f'service "{name}" {{ policy = "write" }}\nservice_prefix "" {{ policy = "read" }}'
    policy = {"Name": f"{name}-{uuid.uuid4().hex[:8]}", "Rules": rules}
    status, made, _ = server.request("PUT", "/v1/acl/policy", policy, MGMT)
    assert status == 200, made
    status, token, _ = server.request(
        "PUT", "/v1/acl/token", {"Policies": [{"ID": made["ID"]}]}, MGMT
    )
    assert status == 200, token
    return str(token["SecretID"])


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with acl_server(ROOT) as s:
        web = {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}}
        assert s.request("PUT", "/v1/agent/service/register", web, MGMT)[0] == 200
        yield s


def test_registering_a_gateway_needs_write_on_its_name(server: ServerProcess) -> None:
    web = {"X-Consul-Token": token_for(server, "web")}
    status, body, _ = server.request("PUT", "/v1/agent/service/register", GATEWAY, web)
    assert status == 403, body
    mine = {"X-Consul-Token": token_for(server, "mesh-gateway")}
    assert server.request("PUT", "/v1/agent/service/register", GATEWAY, mine)[0] == 200


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_a_gateway_stream_without_a_token_is_refused(
    server: ServerProcess, protocol: str
) -> None:
    assert server.request("PUT", "/v1/agent/service/register", GATEWAY, MGMT)[0] == 200
    err = await refused(Stream(server.grpc, protocol, "gw-1", None))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks permission 'service:write' on \"mesh-gateway\"" in str(err.details())


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_a_gateway_stream_with_a_routed_services_token_is_refused(
    server: ServerProcess, protocol: str
) -> None:
    assert server.request("PUT", "/v1/agent/service/register", GATEWAY, MGMT)[0] == 200
    err = await refused(Stream(server.grpc, protocol, "gw-1", token_for(server, "web")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks permission 'service:write' on \"mesh-gateway\"" in str(err.details())


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_the_gateways_own_token_is_served_its_clusters(
    server: ServerProcess, protocol: str
) -> None:
    assert server.request("PUT", "/v1/agent/service/register", GATEWAY, MGMT)[0] == 200
    stream = Stream(server.grpc, protocol, "gw-1", token_for(server, "mesh-gateway"))
    try:
        got = await stream.next()
    finally:
        await stream.close()
    assert got.type_url == TYPE_CLUSTER
    assert len(got.resources) == 1  # the cluster of web's sidecars, no TLS of its own
    assert b".internal." in got.resources[0].SerializeToString()
