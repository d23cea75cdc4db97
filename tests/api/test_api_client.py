"""The API client against real servers: a `loom server` process, and aiohttp servers on
loopback (or a unix socket) that answer the ways a server may: chunked, close-delimited,
late, not at all, over TLS."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from loom.api import (
    AsyncClient,
    Client,
    ClientError,
    HTTPStatusError,
    MockTransport,
    NotFoundError,
    ProtocolError,
    RequestTimeout,
    TlsSettings,
    UnreachableError,
)
from loom.api.codec import Request, Response
from loom.k8s.certs import generate_tls
from tests.support.mesh import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Serve one handler on every path; returns the address (TCP, unix socket or TLS)."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, unix: Path | None = None,
                    context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        if unix is not None:
            await web.UnixSite(runner, str(unix)).start()
            return f"unix:{unix}"
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        return f"127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def test_the_sync_client_registers_reads_and_maps_a_404_to_not_found(loom_server) -> None:
    client = Client(loom_server.http)
    client.put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Port": 8080})
    answer = client.request("GET", "/v1/agent/service/web-1")
    assert answer.body["Service"] == "web" and answer.index > 0
    with pytest.raises(NotFoundError) as caught:
        client.get("/v1/agent/service/nope")
    assert caught.value.status == 404 and str(caught.value)


async def test_a_refused_request_carries_the_servers_own_message(loom_server) -> None:
    client = AsyncClient(loom_server.http)
    with pytest.raises(HTTPStatusError) as caught:
        await client.put("/v1/config", {"Kind": "service-defaults", "Name": "w",
                                        "Protocol": "smtp"})
    assert caught.value.status == 400
    assert str(caught.value).startswith("Invalid request: Protocol: 'smtp'")
    assert caught.value.reason.startswith("HTTP 400: Invalid request")


async def test_a_chunked_answer_is_read_whole(serve) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"X-Consul-Index": "9",
                                           "Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in (b'{"a": ', b'[1, 2', b", 3]}"):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    answer = await AsyncClient(await serve(chunked)).request("GET", "/v1/x")
    assert (answer.body, answer.index) == ({"a": [1, 2, 3]}, 9)


async def test_an_answer_that_ends_at_close_is_read_whole() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http10, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        assert await AsyncClient(f"127.0.0.1:{port}").get("/") == "until the end"
    finally:
        server.close()
        await server.wait_closed()


async def test_the_client_speaks_over_a_unix_socket(serve, tmp_path: Path) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"host": request.host, "path": request.path_qs})

    addr = await serve(hello, unix=tmp_path / "http.sock")
    assert await AsyncClient(addr).get("/v1/status/leader", ns="a b") == {
        "host": "localhost", "path": "/v1/status/leader?ns=a+b"}


async def test_a_server_that_does_not_answer_in_time_is_a_timeout(serve) -> None:
    never = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    addr = await serve(stuck)
    try:
        with pytest.raises(RequestTimeout) as caught:
            await AsyncClient(addr, timeout=0.2).get("/v1/agent/services")
    finally:
        never.set()  # lets the server's handler end, so the server stops at once
    assert str(caught.value).startswith(
        f"the Loom server at {addr} did not answer GET /v1/agent/services within 0.2 s")


async def test_a_refused_connection_names_the_address_and_the_flag_to_set() -> None:
    port = free_port()
    with pytest.raises(UnreachableError) as caught:
        await AsyncClient(f"127.0.0.1:{port}").get("/v1/status/leader")
    assert str(caught.value) == (
        f"cannot reach the Loom server at 127.0.0.1:{port}: Connection refused "
        "(is `loom server` running? set --http-addr or LOOM_HTTP_ADDR)")
    assert caught.value.reason == "Connection refused"


def test_the_address_comes_from_loom_http_addr_when_no_flag_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOOM_HTTP_ADDR", "unix:/run/x.sock")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.0.0.1:8500")
    assert str(Client().addr) == "unix:/run/x.sock"
    monkeypatch.delenv("LOOM_HTTP_ADDR")
    assert str(Client().addr) == "10.0.0.1:8500"
    monkeypatch.delenv("CONSUL_HTTP_ADDR")
    assert str(Client().addr) == "127.0.0.1:8500"
    assert str(Client("[::1]:8600").addr) == "[::1]:8600"


async def test_https_addresses_verify_the_server_against_the_given_ca(
    serve, tmp_path: Path
) -> None:
    material = generate_tls("loom", "mesh", datetime.datetime.now(datetime.UTC))
    (tmp_path / "cert.pem").write_bytes(material.cert_pem)
    (tmp_path / "key.pem").write_bytes(material.key_pem)
    (tmp_path / "ca.pem").write_bytes(material.ca_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"scheme": request.scheme})

    addr = await serve(hello, context=context)
    tls = TlsSettings(ca_file=str(tmp_path / "ca.pem"), server_name="loom.mesh.svc")
    assert await AsyncClient(f"https://{addr}", tls=tls).get("/") == {"scheme": "https"}
    refused = "TLS: certificate verify failed: unable to get local issuer certificate"
    with pytest.raises(UnreachableError, match=refused):
        await AsyncClient(f"https://{addr}", tls=TlsSettings(server_name="loom.mesh.svc")).get("/")
    with pytest.raises(ClientError, match="cannot load the CA file"):
        await AsyncClient(f"https://{addr}", tls=TlsSettings(ca_file=str(tmp_path / "no"))).get("/")


async def test_a_token_is_sent_as_x_consul_token_and_json_bodies_are_typed() -> None:
    def echo(request: Request) -> Response:
        return Response(200, "OK", {"x-consul-index": "3"}, b"true")

    transport = MockTransport(echo)
    client = AsyncClient("10.0.0.1:8500", token="s3cr3t", transport=transport)
    assert await client.put("/v1/config", {"Kind": "proxy-defaults"}, cas="0") is True
    [sent] = transport.requests
    assert (sent.method, sent.target, sent.host) == ("PUT", "/v1/config?cas=0", "10.0.0.1:8500")
    assert sent.headers["X-Consul-Token"] == "s3cr3t"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body == b'{"Kind": "proxy-defaults"}'
    plain = AsyncClient("10.0.0.1:8500", transport=MockTransport(echo))
    await plain.get("/")
    assert "X-Consul-Token" not in plain.transport.requests[0].headers  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "body", "error", "message"), [
    (404, b"", NotFoundError, "/v1/x: not found"),
    (500, b"", HTTPStatusError, "GET /v1/x: HTTP 500"),
    (500, b"boom\nsecond line", HTTPStatusError, "boom\nsecond line"),
    (403, b"Permission denied", HTTPStatusError, "Permission denied"),
])
async def test_error_statuses_map_to_consuls_errors(
    status: int, body: bytes, error: type[Exception], message: str
) -> None:
    client = AsyncClient(transport=MockTransport(lambda _: Response(status, "", {}, body)))
    with pytest.raises(error) as caught:
        await client.get("/v1/x")
    assert str(caught.value) == message


async def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ProtocolError, match=r"sent a broken answer: not an HTTP/1\.x"):
            await AsyncClient(f"127.0.0.1:{port}").get("/")
    finally:
        server.close()
        await server.wait_closed()
