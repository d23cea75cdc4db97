"""``loom.server.wan.call``, the one way to another datacenter, against a real ``loom server``
process standing in for dc2 (and a port nothing listens on standing in for a lost server)."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from loom.control.state import ServerSettings, State
from loom.domain.federation import FederationState
from loom.server import wan
from loom.store import Store
from tests.support.server import ServerProcess, acl_server

MANAGEMENT = "6f1a1c1e-3c43-4b8a-9d59-5b0b7a1f0c11"


@pytest.fixture(scope="module")
def dc2() -> Iterator[ServerProcess]:
    with acl_server(MANAGEMENT, "--datacenter", "dc2") as server:
        yield server


@pytest.fixture
async def dc1() -> AsyncIterator[State]:
    state = State(ServerSettings(), store=Store())
    await state.start()
    yield state
    await wan.close(state)
    await state.close()


def _dead_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def _learn(state: State, *servers: str) -> None:
    await state.federation.write_state(FederationState("dc2", servers, (), (), ""))


async def test_a_call_reaches_the_other_datacenter_with_the_token_given(
    dc1: State, dc2: ServerProcess
) -> None:
    await _learn(dc1, dc2.http)
    status, headers, body = await wan.call(
        dc1, "dc2", "GET", "/v1/acl/token/self", token=MANAGEMENT
    )
    assert status == 200 and json.loads(body)["SecretID"] == MANAGEMENT
    assert "X-Consul-Index" in headers or "X-Consul-KnownLeader" in headers
    reg = json.dumps({"Name": "web", "Port": 80}).encode()
    path = "/v1/agent/service/register"
    status, _, _ = await wan.call(dc1, "dc2", "PUT", path, body=reg)
    assert status == 403  # no token: dc2's anonymous token, which may not write
    status, _, _ = await wan.call(dc1, "dc2", "PUT", path, body=reg, token=MANAGEMENT)
    assert status == 200
    status, _, body = await wan.call(
        dc1, "dc2", "GET", "/v1/catalog/service/web", query={"dc": "dc2"}, token=MANAGEMENT
    )
    assert status == 200 and [s["ServicePort"] for s in json.loads(body)] == [80]


async def test_a_server_that_is_gone_gives_way_to_the_next_known_one(
    dc1: State, dc2: ServerProcess
) -> None:
    await _learn(dc1, _dead_port(), dc2.http)
    status, _, body = await wan.call(dc1, "dc2", "GET", "/v1/catalog/datacenters", token=MANAGEMENT)
    assert status == 200 and json.loads(body) == ["dc2"]


async def test_an_unknown_or_unreachable_datacenter_is_no_path_at_once(dc1: State) -> None:
    with pytest.raises(wan.NoPathToDatacenter) as caught:
        await wan.call(dc1, "dc2", "GET", "/v1/catalog/services")
    assert str(caught.value) == wan.NO_PATH and caught.value.datacenter == "dc2"
    await _learn(dc1, _dead_port(), _dead_port())
    started = time.monotonic()
    with pytest.raises(wan.NoPathToDatacenter) as caught:
        await wan.call(dc1, "dc2", "GET", "/v1/catalog/services")
    assert time.monotonic() - started < wan.CONNECT_TIMEOUT_S
    assert "127.0.0.1" in caught.value.reason


async def test_a_tls_only_server_sends_nothing_to_a_plain_http_peer(
    dc1: State, dc2: ServerProcess
) -> None:
    wan.use_tls(dc1, ssl.create_default_context(), tls_only=True)
    await _learn(dc1, dc2.http)
    reg = json.dumps({"Name": "in-clear", "Port": 80}).encode()
    with pytest.raises(wan.NoPathToDatacenter) as caught:
        await wan.call(dc1, "dc2", "PUT", "/v1/agent/service/register", body=reg,
                       token=MANAGEMENT)  # fmt: skip
    assert f"refusing plain HTTP to {dc2.http}" in caught.value.reason
    assert f"give https://{dc2.http}" in caught.value.reason
    status, services, _ = dc2.request("GET", "/v1/catalog/services",
                                      headers={"X-Consul-Token": MANAGEMENT})  # fmt: skip
    assert status == 200 and "in-clear" not in services
