"""The ADS stream's ACL token, against a real `loom server --acl-default-policy deny`.

An attacker with a raw gRPC client (the protocol Envoy speaks) tries SotW and Delta streams
with no token, a garbage token, and the token of service ``a`` on the stream of ``b``'s
sidecar: each ends with ``PERMISSION_DENIED`` in Consul's words and carries no resource. The
user's own stream is served; it ends when its token is deleted or its policy stops allowing.
A token is judged in the proxy's namespace: one that writes every service of ``team`` gets its
proxy there and not ``b``'s in ``default``; one that writes a name in ``default`` does not get
the proxy of that name in ``team``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from loom.xds.translate.names import ORDER, TYPE_CLUSTER, TYPE_LISTENER, TYPE_SECRET
from tests.support.server import ServerProcess, acl_server, start_server

ROOT = str(uuid.uuid4())
RULES = """
service "{name}" {{ policy = "write" }}
service "{name}-sidecar-proxy" {{ policy = "write" }}
service_prefix "" {{ policy = "read" }}
node_prefix "" {{ policy = "read" }}
"""
MGMT = {"X-Consul-Token": ROOT}
PROTOCOLS = ["sotw", "delta"]


class Mesh:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        for name in ("a", "b"):
            body = {"Name": name, "Port": 8080, "Connect": {"SidecarService": {}}}
            assert server.request("PUT", "/v1/agent/service/register", body, MGMT)[0] == 200

    def token_for(self, name: str) -> dict[str, Any]:
        """A fresh token with its own policy: write on ``name`` and its sidecar."""
        policy = {"Name": f"{name}-{uuid.uuid4().hex[:8]}", "Rules": RULES.format(name=name)}
        status, made, _ = self.server.request("PUT", "/v1/acl/policy", policy, MGMT)
        assert status == 200, made
        status, token, _ = self.server.request(
            "PUT", "/v1/acl/token", {"Policies": [{"ID": made["ID"]}]}, MGMT
        )
        assert status == 200, token
        token["PolicyID"] = made["ID"]
        token["PolicyName"] = made["Name"]
        return dict(token)

    def denied(self, accessor: str, name: str) -> str:
        return (
            f"Permission denied: token with AccessorID '{accessor}' lacks permission "
            f"'service:write' on \"{name}\""
        )


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with acl_server(ROOT) as server:
        yield Mesh(server)


class Stream:
    """One ADS stream of a raw client: asks for clusters as ``proxy_id``, then waits."""

    def __init__(self, target: str, protocol: str, proxy_id: str, token: str | None) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        node = base_pb2.Node(id=proxy_id)
        self.first: Any = (
            discovery_pb2.DiscoveryRequest(node=node, type_url=TYPE_CLUSTER)
            if protocol == "sotw"
            else discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=TYPE_CLUSTER)
        )
        metadata = (("x-consul-token", token),) if token is not None else ()
        method = (
            stub.StreamAggregatedResources if protocol == "sotw" else stub.DeltaAggregatedResources
        )
        self.call = method(metadata=metadata)  # written to below: no iterator task to leak
        self.started = False

    async def next(self) -> Any:
        async with asyncio.timeout(15):
            if not self.started:
                self.started = True
                with contextlib.suppress(grpc.aio.AioRpcError):  # refused: read() says why
                    await self.call.write(self.first)
            return await self.call.read()

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


async def refused(stream: Stream) -> grpc.aio.AioRpcError:
    """The error the stream ends with; fails if any response arrives first."""
    try:
        got = await stream.next()
    except grpc.aio.AioRpcError as exc:
        return exc
    finally:
        await stream.close()
    raise AssertionError(f"the stream was answered: {got}")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_without_a_token_is_refused(mesh: Mesh, protocol: str) -> None:
    err = await refused(Stream(mesh.server.grpc, protocol, "b-sidecar-proxy", None))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous = "00000000-0000-0000-0000-000000000002"
    assert err.details() == mesh.denied(anonymous, "b")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_with_a_garbage_token_is_refused_as_not_found(
    mesh: Mesh, protocol: str
) -> None:
    stream = Stream(mesh.server.grpc, protocol, "b-sidecar-proxy", str(uuid.uuid4()))
    err = await refused(stream)
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "ACL not found"), err


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_token_for_a_on_the_stream_of_b_is_refused(mesh: Mesh, protocol: str) -> None:
    a = mesh.token_for("a")
    err = await refused(Stream(mesh.server.grpc, protocol, "b-sidecar-proxy", a["SecretID"]))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == mesh.denied(a["AccessorID"], "b")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_token_for_a_is_served_the_stream_of_a(mesh: Mesh, protocol: str) -> None:
    a = mesh.token_for("a")
    stream = Stream(mesh.server.grpc, protocol, "a-sidecar-proxy", a["SecretID"])
    try:
        first = await stream.next()
        assert first.type_url == TYPE_CLUSTER and len(first.resources) > 0
    finally:
        await stream.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_deleting_the_token_ends_its_open_stream(mesh: Mesh, protocol: str) -> None:
    a = mesh.token_for("a")
    stream = Stream(mesh.server.grpc, protocol, "a-sidecar-proxy", a["SecretID"])
    try:
        assert (await stream.next()).type_url == TYPE_CLUSTER
        status, _, _ = await asyncio.to_thread(
            mesh.server.request, "DELETE", f"/v1/acl/token/{a['AccessorID']}", None, MGMT
        )
        assert status == 200
        err = await refused(stream)
    finally:
        await stream.close()
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "ACL not found")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_policy_that_stops_allowing_ends_the_open_stream(mesh: Mesh, protocol: str) -> None:
    a = mesh.token_for("a")
    stream = Stream(mesh.server.grpc, protocol, "a-sidecar-proxy", a["SecretID"])
    try:
        assert (await stream.next()).type_url == TYPE_CLUSTER
        body = {"Name": a["PolicyName"], "Rules": 'service "a" { policy = "read" }'}
        status, out, _ = await asyncio.to_thread(
            mesh.server.request, "PUT", f"/v1/acl/policy/{a['PolicyID']}", body, MGMT
        )
        assert status == 200, out
        err = await refused(stream)
    finally:
        await stream.close()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == mesh.denied(a["AccessorID"], "a")


TEAM_RULES = 'namespace "team" { service_prefix "" { policy = "write" } }'


def team_token(mesh: Mesh, service: str) -> dict[str, Any]:
    """Registers ``service`` (with a sidecar) in namespace ``team``; a fresh token that may
    write every service of ``team`` and nothing in ``default``."""
    body = {
        "Name": service,
        "Namespace": "team",
        "Port": 8080,
        "Connect": {"SidecarService": {}},
    }
    status, out, _ = mesh.server.request("PUT", "/v1/agent/service/register", body, MGMT)
    assert status == 200, out
    policy = {"Name": f"team-{uuid.uuid4().hex[:8]}", "Rules": TEAM_RULES}
    status, made, _ = mesh.server.request("PUT", "/v1/acl/policy", policy, MGMT)
    assert status == 200, made
    status, token, _ = mesh.server.request(
        "PUT", "/v1/acl/token", {"Policies": [{"ID": made["ID"]}]}, MGMT
    )
    assert status == 200, token
    return dict(token)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_namespace_token_is_served_its_namespaces_proxy_and_refused_defaults(
    mesh: Mesh, protocol: str
) -> None:
    team = await asyncio.to_thread(team_token, mesh, f"t{protocol}")
    stream = Stream(mesh.server.grpc, protocol, f"t{protocol}-sidecar-proxy", team["SecretID"])
    try:
        first = await stream.next()
        assert first.type_url == TYPE_CLUSTER and len(first.resources) > 0
    finally:
        await stream.close()
    err = await refused(Stream(mesh.server.grpc, protocol, "b-sidecar-proxy", team["SecretID"]))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == mesh.denied(team["AccessorID"], "b")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_token_for_a_name_in_default_is_refused_that_names_proxy_in_another_namespace(
    mesh: Mesh, protocol: str
) -> None:
    name = f"n{protocol}"
    await asyncio.to_thread(team_token, mesh, name)
    same_name = await asyncio.to_thread(mesh.token_for, name)  # write on the name, in default
    stream = Stream(mesh.server.grpc, protocol, f"{name}-sidecar-proxy", same_name["SecretID"])
    err = await refused(stream)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == mesh.denied(same_name["AccessorID"], name)


async def test_with_acls_off_a_stream_needs_no_token() -> None:
    server = await asyncio.to_thread(start_server)
    try:
        body = {"Name": "a", "Port": 8080, "Connect": {"SidecarService": {}}}
        assert server.request("PUT", "/v1/agent/service/register", body)[0] == 200
        stream = Stream(server.grpc, "delta", "a-sidecar-proxy", None)
        try:
            assert (await stream.next()).type_url == TYPE_CLUSTER
        finally:
            await stream.close()
    finally:
        server.stop()


class Session:
    """A whole ADS session as Envoy holds one: every type asked for (secrets by name), each
    response ACKed, every response kept."""

    def __init__(self, target: str, protocol: str, proxy_id: str, token: str) -> None:
        self.protocol = protocol
        self.channel = grpc.aio.insecure_channel(target)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        method = (
            stub.StreamAggregatedResources if protocol == "sotw" else stub.DeltaAggregatedResources
        )
        self.call = method(metadata=(("x-consul-token", token),))
        self.node = base_pb2.Node(id=proxy_id)
        self.responses: list[Any] = []
        self.arrived = asyncio.Condition()

    def _request(self, type_url: str, resp: Any = None) -> Any:
        names = ["leaf", "roots"] if type_url == TYPE_SECRET else []
        if self.protocol == "sotw":
            return discovery_pb2.DiscoveryRequest(
                node=self.node, type_url=type_url, resource_names=names,
                version_info=resp.version_info if resp else "",
                response_nonce=resp.nonce if resp else "",
            )  # fmt: skip
        if resp is not None:
            return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=resp.nonce)
        return discovery_pb2.DeltaDiscoveryRequest(
            node=self.node, type_url=type_url, resource_names_subscribe=names
        )

    async def run(self) -> None:
        for t in ORDER:
            await self.call.write(self._request(t))
        while (resp := await self.call.read()) is not grpc.aio.EOF:
            await self.call.write(self._request(resp.type_url, resp))
            async with self.arrived:
                self.responses.append(resp)
                self.arrived.notify_all()

    async def count(self, type_url: str, at_least: int) -> None:
        async with asyncio.timeout(15), self.arrived:
            await self.arrived.wait_for(
                lambda: sum(r.type_url == type_url for r in self.responses) >= at_least
            )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_no_xds_response_of_a_whole_session_carries_a_private_key_or_a_secret(
    mesh: Mesh, protocol: str
) -> None:
    a = mesh.token_for("a")
    session = Session(mesh.server.grpc, protocol, "a-sidecar-proxy", a["SecretID"])
    task = asyncio.create_task(session.run())
    intention = "/v1/connect/intentions/exact?source=b&destination=a"
    try:
        await session.count(TYPE_LISTENER, 1)
        for method, body in (("PUT", {"Action": "allow"}), ("DELETE", None)):
            seen = sum(r.type_url == TYPE_LISTENER for r in session.responses)
            status, out, _ = await asyncio.to_thread(
                mesh.server.request, method, intention, body, MGMT
            )
            assert status == 200, out
            await session.count(TYPE_LISTENER, seen + 1)  # the intention reached the proxy
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.channel.close()
    kinds = {r.type_url for r in session.responses}
    assert {TYPE_CLUSTER, TYPE_LISTENER} <= kinds
    for resp in session.responses:
        assert b"PRIVATE KEY" not in resp.SerializeToString()
        if resp.type_url == TYPE_SECRET:
            assert len(resp.resources) == 0
