"""A check run by a dataplane turns critical, saying so, once that dataplane's xDS stream has
been gone for 3 of the check's intervals; while the stream is there it keeps what the
dataplane reported. Against a real `loom server`, with a real ADS stream opened by the test
in the dataplane's place (the sidecar's proxy ID as its node)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from loom.domain.checkstate import DATAPLANE_GONE
from loom.xds.translate.names import TYPE_CLUSTER
from tests.api.test_agent_checks import register, status_is, wait_check
from tests.support.server import ServerProcess, start_server

CHECK = {"TCP": "127.0.0.1:1", "Interval": "1s", "Status": "passing"}


class Stream:
    """An ADS stream held open as a dataplane's Envoy holds it."""

    def __init__(self, server: ServerProcess, proxy_id: str) -> None:
        self.channel = grpc.insecure_channel(server.grpc)
        self.out: queue.Queue[Any] = queue.Queue()
        node = base_pb2.Node(id=proxy_id)
        self.out.put(discovery_pb2.DiscoveryRequest(node=node, type_url=TYPE_CLUSTER))
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.answers = stub.StreamAggregatedResources(iter(self.out.get, None))
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.first.wait(10), "the server never answered the stream"

    def _read(self) -> None:
        try:
            for _ in self.answers:
                self.first.set()
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self.out.put(None)
        self.answers.cancel()
        self.thread.join(10)
        self.channel.close()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    s = start_server()
    try:
        yield s
    finally:
        s.stop()


def _app(server: ServerProcess, name: str) -> str:
    """An app with a sidecar and a 1 s TCP check (which the sidecar's dataplane runs)."""
    register(server, {"Name": name, "Port": 8080, "Check": CHECK,
                      "Connect": {"SidecarService": {}}})  # fmt: skip
    return f"service:{name}"


def test_a_check_whose_dataplane_never_came_turns_critical_saying_why(
    server: ServerProcess,
) -> None:
    check_id = _app(server, "lonely")
    check = wait_check(server, check_id, status_is("critical"), timeout=20)
    assert check["Output"].startswith(DATAPLANE_GONE)
    assert "lonely-sidecar-proxy" in check["Output"] and "3 intervals of 1s" in check["Output"]


def test_a_live_stream_keeps_the_dataplanes_word_and_its_end_turns_the_check_critical(
    server: ServerProcess,
) -> None:
    live, gone = _app(server, "live"), _app(server, "gone")
    stream = Stream(server, "live-sidecar-proxy")
    try:
        # the dataplane's report, as it sends it
        server.put(f"/v1/agent/check/update/{live}", {"Status": "passing", "Output": "fine"})
        # the app without a stream turns critical: the same time has passed for both
        wait_check(server, gone, status_is("critical"), timeout=20)
        _, checks, _ = server.request("GET", "/v1/agent/checks")
        assert (checks[live]["Status"], checks[live]["Output"]) == ("passing", "fine")
    finally:
        stream.close()
    check = wait_check(server, live, status_is("critical"), timeout=20)
    assert check["Output"].startswith(DATAPLANE_GONE) and "live-sidecar-proxy" in check["Output"]
