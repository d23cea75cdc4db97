"""gRPC checks with ``GRPCUseTLS`` and ``TLSSkipVerify`` (Consul's fields) against a real
grpcio server serving TLS with a self-signed certificate and one signed by an unknown CA:
skipped verification passes and reads the serving status; without it the same server is
critical (its certificate is not trusted). A hostile TLS peer (garbage frames, a huge frame,
silence) gives a critical result within the check's timeout, never a hang."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from loom.domain.checks import CheckDefinition
from loom.health.probes import CRITICAL, PASSING, probe_grpc
from tests.support.pki import ScratchCA


def _definition(port: int, **extra: object) -> CheckDefinition:
    fields = {"kind": "grpc", "grpc": f"127.0.0.1:{port}/svc", "grpc_use_tls": True,
              "interval_s": 1.0, "timeout_s": 3.0, **extra}  # fmt: skip
    return CheckDefinition(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["self-signed", "unknown-ca"])
def tls_health_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, list[int]]]:
    ca = ScratchCA(tmp_path)
    issued = ca.issue("health", sans=("health.example",), self_signed=request.param == "self-signed")
    serving = [1]

    def check(req: bytes, context: grpc.ServicerContext) -> bytes:
        return bytes([0x08, serving[0]])

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    creds = grpc.ssl_server_credentials([(issued.key.read_bytes(), issued.cert.read_bytes())])
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    try:
        yield port, serving
    finally:
        srv.stop(None)


async def test_skipping_verification_reads_the_status_of_a_server_no_ca_vouches_for(
    tls_health_server: tuple[int, list[int]],
) -> None:
    port, serving = tls_health_server
    d = _definition(port, tls_skip_verify=True, tls_server_name="health.example")
    result = await probe_grpc(d)
    assert (result.status, result.output) == (PASSING, f"gRPC check 127.0.0.1:{port}/svc: success")
    serving[0] = 2
    result = await probe_grpc(d)
    assert result.status == CRITICAL and result.output.endswith("unhealthy: NOT_SERVING")


async def test_without_skip_verify_the_same_server_is_critical(
    tls_health_server: tuple[int, list[int]],
) -> None:
    port, _ = tls_health_server
    result = await probe_grpc(_definition(port, tls_server_name="health.example"))
    assert result.status == CRITICAL and "UNAVAILABLE" in result.output


async def _hostile(reply: bytes, tmp_path: Path) -> tuple[asyncio.Server, int]:
    ca = ScratchCA(tmp_path)
    issued = ca.issue("evil", self_signed=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        while await reader.read(1 << 16):  # keep the connection open until the client goes
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (b"\xff" * 9 + b"junk", "too large"),  # a frame header claiming 16 MiB
        (b"", "DEADLINE_EXCEEDED"),  # silence
        (bytes.fromhex("000000010500000001"), "without a health status"),  # trailers only
        (bytes.fromhex("000004030000000001") + b"\0\0\0\x02", "reset the call"),
    ],
)
async def test_a_hostile_tls_peer_is_critical_within_the_timeout(
    tmp_path: Path, reply: bytes, said: str
) -> None:
    server, port = await _hostile(reply, tmp_path)
    try:
        d = _definition(port, tls_skip_verify=True, timeout_s=1.0)
        result = await asyncio.wait_for(probe_grpc(d), 5.0)
        assert result.status == CRITICAL and said in result.output
    finally:
        server.close()
        await server.wait_closed()
