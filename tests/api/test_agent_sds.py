"""The dataplane agent's SDS server with a real gRPC client on its unix socket (Envoy's
protocol): owner-only socket, first request answered, ACKs not, a renewal pushed at once on
the open stream, each stream given only the secrets it asked for."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from loom.dataplane.sds import SecretStore, serve_sds, socket_path
from loom.xds.translate.names import TYPE_SECRET


class Client:
    def __init__(self, path: Path, *names: str) -> None:
        self.channel = grpc.aio.insecure_channel(f"unix:{path}")
        self.call = sds_pb2_grpc.SecretDiscoveryServiceStub(self.channel).StreamSecrets()
        self.names = list(names)

    async def ask(self, nonce: str = "", version: str = "") -> None:
        await self.call.write(
            discovery_pb2.DiscoveryRequest(
                type_url=TYPE_SECRET, resource_names=self.names,
                response_nonce=nonce, version_info=version,
            )
        )  # fmt: skip

    async def next(self, timeout: float = 10) -> discovery_pb2.DiscoveryResponse:
        async with asyncio.timeout(timeout):
            resp: discovery_pb2.DiscoveryResponse = await self.call.read()
            return resp

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def _secrets(resp: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for res in resp.resources:
        s = secret_pb2.Secret()
        res.Unpack(s)
        out[s.name] = s
    return out


async def test_the_socket_is_owner_only_and_a_renewal_reaches_an_open_stream(
    tmp_path: Path,
) -> None:
    store = SecretStore()
    store.set("CERT-1", "-----BEGIN PRIVATE KEY-----\nK1\n", "ROOTS")
    work = tmp_path / "w"
    path, short = socket_path(work)
    assert short is None
    stop = await serve_sds(store, path)
    leaf = Client(path, "leaf")
    roots = Client(path, "roots")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(work.stat().st_mode) == 0o700
        await leaf.ask()
        first = await leaf.next()
        got = _secrets(first)
        assert list(got) == ["leaf"]
        assert got["leaf"].tls_certificate.certificate_chain.inline_string == "CERT-1"
        await roots.ask()
        assert list(_secrets(await roots.next())) == ["roots"]

        await leaf.ask(first.nonce, first.version_info)  # an ACK: nothing comes back
        store.set("CERT-2", "-----BEGIN PRIVATE KEY-----\nK2\n", "ROOTS")
        pushed = await leaf.next()  # the next message is the renewal, not an ACK's echo
        assert pushed.version_info != first.version_info
        renewed = _secrets(pushed)["leaf"].tls_certificate
        assert renewed.certificate_chain.inline_string == "CERT-2"
        assert "K2" in renewed.private_key.inline_string
    finally:
        await leaf.close()
        await roots.close()
        await stop()
    assert not path.exists()


async def test_a_work_dir_too_long_for_a_unix_socket_gets_a_short_private_one(
    tmp_path: Path,
) -> None:
    path, short = socket_path(tmp_path / ("x" * 120))
    assert short is not None and path.parent == short and len(str(path)) < 100
    store = SecretStore()
    store.set("C", "K", "R")
    stop = await serve_sds(store, path)
    try:
        assert stat.S_IMODE(short.stat().st_mode) == 0o700
    finally:
        await stop()
        short.rmdir()


async def test_secrets_larger_than_the_flow_control_window_arrive_whole_on_every_stream(
    tmp_path: Path,
) -> None:
    # 300 KB of roots: more than HTTP/2's default 64 KiB windows and many 16 KiB frames, to
    # three clients at once, so each answer has to wait for its client's WINDOW_UPDATEs.
    roots = "".join(f"-----BEGIN CERTIFICATE-----\n{i:06d}{'R' * 994}\n" for i in range(300))
    store = SecretStore()
    store.set("CERT", "KEY", roots)
    path, _ = socket_path(tmp_path / "w")
    stop = await serve_sds(store, path)
    clients = [Client(path, "roots") for _ in range(3)]
    try:
        for c in clients:
            await c.ask()
        for c in clients:
            got = _secrets(await c.next())
            assert got["roots"].validation_context.trusted_ca.inline_string == roots
    finally:
        for c in clients:
            await c.close()
        await stop()


async def test_a_malformed_request_fails_its_call_and_the_server_answers_the_next(
    tmp_path: Path,
) -> None:
    store = SecretStore()
    store.set("CERT", "KEY", "ROOTS")
    path, _ = socket_path(tmp_path / "w")
    stop = await serve_sds(store, path)
    channel = grpc.aio.insecure_channel(f"unix:{path}")
    try:
        call = channel.stream_stream(
            "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
        )()  # raw bytes both ways
        await call.write(b"\x0b")  # a field of wire type 3: not protobuf this server reads
        await call.done_writing()
        async with asyncio.timeout(10):
            assert await call.code() == grpc.StatusCode.INTERNAL
        good = Client(path, "leaf")
        await good.ask()
        assert list(_secrets(await good.next())) == ["leaf"]
        await good.close()
    finally:
        await channel.close()
        await stop()
