"""The TLS xDS listener (``--grpc-tls-addr``, Consul's 8503) of a real `loom server`, with a
real gRPC client on ssl channel credentials: it gets the proxy's configuration when it
trusts the server's CA, and nothing when it does not, speaks plaintext, or (with
``--tls-verify-incoming``) brings no client certificate of the CA."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from loom.xds.translate.names import TYPE_CLUSTER
from tests.support.pki import ScratchCA
from tests.support.server import ServerProcess, start_server

PROXY = "web-sidecar-proxy"


def _register(server: ServerProcess) -> None:
    server.put("/v1/agent/service/register",
               {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": 21000}}})  # fmt: skip


def _first_clusters(channel: grpc.Channel) -> discovery_pb2.DiscoveryResponse:
    """One SotW CDS request as the proxy; the first answer (the stream stays open until
    then, as Envoy's does)."""
    done = threading.Event()

    def requests() -> Iterator[discovery_pb2.DiscoveryRequest]:
        yield discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=PROXY), type_url=TYPE_CLUSTER)
        done.wait(15)

    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    try:
        for response in stub.StreamAggregatedResources(requests(), timeout=10):
            return response
        raise AssertionError("the stream ended without an answer")
    finally:
        done.set()


def _refusal(
    target: str, credentials: grpc.ChannelCredentials | None, options: Sequence[Any] = ()
) -> grpc.StatusCode:
    """The status code of the failed first request (fails the test if it succeeds)."""
    channel = (
        grpc.insecure_channel(target, options)
        if credentials is None
        else grpc.secure_channel(target, credentials, options)
    )
    with channel, pytest.raises(grpc.RpcError) as caught:
        _first_clusters(channel)
    return caught.value.code()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    s = start_server("--grpc-tls-addr", "127.0.0.1:0")
    _register(s)
    yield s
    s.stop()


def test_a_grpc_client_trusting_the_built_in_ca_gets_the_proxy_configuration(server) -> None:
    credentials = grpc.ssl_channel_credentials(Path(server.ca_file).read_bytes())
    with grpc.secure_channel(server.grpc_tls, credentials) as channel:
        response = _first_clusters(channel)
    assert response.type_url == TYPE_CLUSTER and len(response.resources) >= 1


def test_the_server_name_in_the_certificate_is_checked_by_the_grpc_client(server) -> None:
    credentials = grpc.ssl_channel_credentials(Path(server.ca_file).read_bytes())
    options = [("grpc.ssl_target_name_override", "server.dc1.consul")]
    with grpc.secure_channel(server.grpc_tls, credentials, options) as channel:
        assert _first_clusters(channel).resources
    options = [("grpc.ssl_target_name_override", "evil.example")]
    assert _refusal(server.grpc_tls, credentials, options) == grpc.StatusCode.UNAVAILABLE


def test_a_grpc_client_trusting_another_ca_gets_nothing(server, tmp_path: Path) -> None:
    other = ScratchCA(tmp_path, "Other CA")
    credentials = grpc.ssl_channel_credentials(other.file.read_bytes())
    assert _refusal(server.grpc_tls, credentials) == grpc.StatusCode.UNAVAILABLE


def test_plaintext_grpc_to_the_tls_port_gets_nothing(server) -> None:
    assert _refusal(server.grpc_tls, None) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(server.grpc) as channel:  # the plaintext port is as it was
        assert _first_clusters(channel).resources


def test_verify_incoming_on_grpc_needs_a_client_certificate_of_the_ca(tmp_path: Path) -> None:
    ca = ScratchCA(tmp_path)
    cert, client = ca.issue("server"), ca.issue("client", client=True)
    s = start_server("--grpc-tls-addr", "127.0.0.1:0", "--tls-cert-file", str(cert.cert),
                     "--tls-key-file", str(cert.key), "--tls-ca-file", str(ca.file),
                     "--tls-verify-incoming")  # fmt: skip
    try:
        _register(s)
        anonymous = grpc.ssl_channel_credentials(ca.file.read_bytes())
        assert _refusal(s.grpc_tls, anonymous) == grpc.StatusCode.UNAVAILABLE
        known = grpc.ssl_channel_credentials(
            ca.file.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
        )
        with grpc.secure_channel(s.grpc_tls, known) as channel:
            assert _first_clusters(channel).resources
    finally:
        s.stop()
