"""The probes of checks that run: one network or process call each, worded as Consul words it.

``probe(definition)`` runs one HTTP, TCP, gRPC (grpc.health.v1), H2PING or script check and
returns its ``Result`` (status and Output); alias checks are not probes (they read the
catalog, see ``loom.domain.checkstate.alias_result``). A probe never raises for what it
observes: a refused connection, a timeout, a bad status are results. Outputs follow Consul's
(``HTTP GET http://...: 200 OK Output: ...``, ``TCP connect HOST:PORT: Success``), kept to
``OUTPUT_MAX_SIZE`` bytes.

HTTP goes over the API client's transport (``loom.api``: standard library, no aiohttp in the
dataplane); gRPC over grpcio with a hand-encoded ``grpc.health.v1.Health/Check`` (one string
field out, one enum field back), so no generated code is needed, except with
``TLSSkipVerify``, which grpcio cannot honour (``loom.health.grpc_h2``); H2PING speaks the
three HTTP/2 frames it needs itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import struct
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from loom.addrs import Address
from loom.api import ClientError, StreamTransport, TlsSettings
from loom.api.codec import Request
from loom.domain.checks import GRPC, H2PING, HTTP, OUTPUT_MAX_SIZE, SCRIPT, TCP, CheckDefinition
from loom.health.grpc_h2 import GrpcH2Error, health_call

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"


@dataclass(frozen=True)
class Result:
    status: str
    output: str


def truncate(text: str, limit: int = OUTPUT_MAX_SIZE) -> str:
    """At most ``limit`` bytes of ``text`` (Consul's OutputMaxSize), saying what was cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", "ignore")
    return f"{kept} ... (captured {limit} of {len(data)} bytes)"


def _host_port(target: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (or a bare host: ``default_port``)."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    host, sep, port = target.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return target, default_port


def _client_context(skip_verify: bool, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


MAX_REDIRECTS = 10
"""Redirects an HTTP check follows, as Go's client (Consul's) does."""


async def _http_once(
    d: CheckDefinition, method: str, url: str, body: bytes
) -> tuple[int, str, str, bytes]:
    """One exchange: status, reason, the Location header, the body (``ClientError`` if none)."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"unsupported URL {url!r}")
    try:
        port = parts.port or (443 if https else 80)
    except ValueError as exc:
        raise ClientError(f"bad port in {url!r}") from exc
    tls = TlsSettings(
        context=_client_context(d.tls_skip_verify) if https else None,
        server_name=d.tls_server_name or None,
    )
    transport = StreamTransport(Address(parts.hostname, port, scheme=parts.scheme), tls)
    headers = {"User-Agent": "Consul Health Check", "Accept": "text/plain, text/*, */*"}
    host = parts.netloc.rpartition("@")[2]
    for name, values in d.header.items():
        if values and name.lower() == "host":
            host = values[-1]
        elif values:
            headers[name] = values[-1]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    response = await transport.send(Request(method, target, host, headers, body), d.timeout_s)
    return response.status, response.reason, response.header("location"), response.body


async def probe_http(d: CheckDefinition) -> Result:
    """2xx passing, 429 warning, anything else critical; redirects are followed."""
    method = d.method or "GET"
    where = f"HTTP {method} {d.http}"
    url, body = d.http, d.body.encode()
    try:
        async with asyncio.timeout(d.timeout_s):
            for _ in range(MAX_REDIRECTS + 1):
                status, reason, location, data = await _http_once(d, method, url, body)
                if status not in (301, 302, 303, 307, 308) or not location:
                    break
                url = urljoin(url, location)
                if status in (301, 302, 303) and method not in ("GET", "HEAD"):
                    method, body = "GET", b""
            else:
                return Result(CRITICAL, f"{where}: stopped after {MAX_REDIRECTS} redirects")
    except TimeoutError:
        return Result(CRITICAL, f"{where}: timed out after {d.timeout_s:g} s")
    except ClientError as exc:
        return Result(CRITICAL, f"{where}: {exc}")
    output = f"{where}: {status} {reason} Output: {truncate(data.decode('utf-8', 'replace'))}"
    if 200 <= status < 300:
        return Result(PASSING, output)
    if status == 429:
        return Result(WARNING, output)
    return Result(CRITICAL, output)


async def probe_tcp(d: CheckDefinition) -> Result:
    host, port = _host_port(d.tcp, 0)
    try:
        async with asyncio.timeout(d.timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Result(CRITICAL, f"dial tcp {d.tcp}: i/o timeout")
    except OSError as exc:
        # asyncio's own loop words it "Connect call failed (addr)": say the errno's name, as Go.
        reason = (os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc)).lower()
        return Result(CRITICAL, f"dial tcp {d.tcp}: connect: {reason}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Result(PASSING, f"TCP connect {d.tcp}: Success")


def _health_request(service: str) -> bytes:
    data = service.encode()
    return (b"\x0a" + _varint(len(data)) + data) if data else b""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _health_status(data: bytes) -> int:
    """The ``status`` (field 1, varint) of a HealthCheckResponse; 0 (UNKNOWN) if absent."""
    if len(data) >= 2 and data[0] == 0x08:
        return data[1] & 0x7F
    return 0


async def probe_grpc(d: CheckDefinition) -> Result:
    import grpc  # only where gRPC checks run

    target, _, service = d.grpc.partition("/")
    if d.grpc_use_tls and d.tls_skip_verify:
        return await _probe_grpc_unverified(d, target, service)
    if d.grpc_use_tls:  # verified against the system's CAs, as the name given or the host
        creds = grpc.ssl_channel_credentials()
        name = d.tls_server_name
        options = [("grpc.ssl_target_name_override", name)] if name else []
        channel = grpc.aio.secure_channel(target, creds, options=options)
    else:
        channel = grpc.aio.insecure_channel(target)
    try:
        call = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        reply: bytes = await call(_health_request(service), timeout=d.timeout_s)
    except grpc.aio.AioRpcError as exc:
        return Result(CRITICAL, f"gRPC check {d.grpc}: {exc.code().name}: {exc.details()}")
    finally:
        await channel.close()
    return _grpc_result(d, reply)


def _grpc_result(d: CheckDefinition, reply: bytes) -> Result:
    status = _health_status(reply)
    if status == 1:
        return Result(PASSING, f"gRPC check {d.grpc}: success")
    name = SERVING_STATUS.get(status, str(status))
    return Result(CRITICAL, f"gRPC check {d.grpc}: gRPC service unhealthy: {name}")


async def _probe_grpc_unverified(d: CheckDefinition, target: str, service: str) -> Result:
    """``GRPCUseTLS`` with ``TLSSkipVerify``: the call over ``loom.health.grpc_h2``, which
    accepts any certificate (grpcio cannot)."""
    host, port = _host_port(target, 443)
    try:
        reply = await health_call(
            host, port, _health_request(service), d.tls_server_name, d.timeout_s
        )
    except TimeoutError:
        return Result(CRITICAL, f"gRPC check {d.grpc}: DEADLINE_EXCEEDED: timed out")
    except GrpcH2Error as exc:
        return Result(CRITICAL, f"gRPC check {d.grpc}: {exc}")
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        return Result(CRITICAL, f"gRPC check {d.grpc}: UNAVAILABLE: {exc}")
    return _grpc_result(d, reply)


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _PING, _GOAWAY = 0x4, 0x6, 0x7


def _frame(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + b"\0\0\0\0" + payload


async def probe_h2ping(d: CheckDefinition) -> Result:
    host, port = _host_port(d.h2ping, 443 if d.h2ping_use_tls else 80)
    context = _client_context(d.tls_skip_verify, ["h2"]) if d.h2ping_use_tls else None
    opaque = os.urandom(8)
    try:
        async with asyncio.timeout(d.timeout_s):
            name = (d.tls_server_name or host) if context else None
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=name
            )
            try:
                writer.write(_PREFACE + _frame(_SETTINGS, 0, b"") + _frame(_PING, 0, opaque))
                await writer.drain()
                while True:
                    head = await reader.readexactly(9)
                    length = int.from_bytes(head[:3], "big")
                    kind, flags = head[3], head[4]
                    payload = await reader.readexactly(length)
                    if kind == _SETTINGS and not flags & 1:
                        writer.write(_frame(_SETTINGS, 1, b""))
                    elif kind == _PING and flags & 1 and payload == opaque:
                        return Result(PASSING, "HTTP2 ping was successful")
                    elif kind == _GOAWAY:
                        return Result(CRITICAL, f"Failed to ping {d.h2ping}: GOAWAY received")
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        return Result(CRITICAL, f"Failed to ping {d.h2ping}: timed out")
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
        return Result(CRITICAL, f"Failed to ping {d.h2ping}: {exc}")


async def probe_script(d: CheckDefinition) -> Result:
    """Exit 0: passing, 1: warning, anything else: critical (Consul's rule)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *d.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return Result(CRITICAL, f"Check failed to start: {exc}")
    try:
        async with asyncio.timeout(d.timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return Result(CRITICAL, f"Timed out ({d.timeout_s:g}s) running check")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        raise
    output = truncate(out.decode("utf-8", "replace"))
    code = proc.returncode
    if code == 0:
        return Result(PASSING, output)
    if code == 1:
        return Result(WARNING, output)
    return Result(CRITICAL, output or f"exit status {code}")


PROBES = {HTTP: probe_http, TCP: probe_tcp, GRPC: probe_grpc, H2PING: probe_h2ping,
          SCRIPT: probe_script}  # fmt: skip


async def probe(d: CheckDefinition) -> Result:
    """Run the check once (not for alias checks, whose runner reads the catalog)."""
    return await PROBES[d.kind](d)
