"""Runs the control plane: store, HTTP API, xDS gRPC server, background sweepers.

``run(settings)`` is what ``loom server`` calls. It prints one line per listener, with the
real port when port 0 was asked for, so scripts and tests can find the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from loom import gctune
from loom.addrs import Address, parse_address
from loom.bexpr import Limits
from loom.control.federation import reachable_addrs
from loom.control.state import ServerSettings, State
from loom.errors import LoomError
from loom.filemodes import restrict_socket
from loom.ratelog import RateSettings, flush_all
from loom.server import wan
from loom.server.checks_run import run_liveness, run_server_checks
from loom.server.clientlog import AiohttpLog
from loom.server.conns import ConnectionCap, capped
from loom.server.errors import ServerError as ServerError  # re-exported
from loom.server.fedca_http import run_federated_ca
from loom.server.federation_sync import run_federation
from loom.server.http import build_app
from loom.server.replication_http import run_replication
from loom.server.tls import ServingTls, prepare_tls, wan_client_context
from loom.xds.server import start_xds

log = logging.getLogger("loom.server")


async def _start_http(
    state: State, addrs: list[Address], tls_addrs: list[Address], context: ssl.SSLContext | None
) -> tuple[web.AppRunner, list[asyncio.AbstractServer], list[str]]:
    """The API on ``addrs`` (plain) and ``tls_addrs`` (HTTPS with ``context``): one app."""
    settings = state.settings
    runner = web.AppRunner(
        build_app(state),
        access_log=None,
        # A request aiohttp refuses itself (oversized URL...) is one line, floods summarised.
        logger=AiohttpLog(logging.getLogger("loom.server.http")),
        handle_signals=False,
        # A blocking query whose client went away is cancelled, not left waiting (other
        # requests are shielded from it in build_app).
        handler_cancellation=True,
        keepalive_timeout=settings.http_idle_timeout_s,
        shutdown_timeout=settings.http_shutdown_grace_s,
        # A ?filter= expression can be long (Go's server takes 1 MiB of request head; aiohttp
        # 8 KiB): the request line may be as long as the longest expression loom.bexpr parses.
        max_line_size=Limits().max_length + 1024,
    )
    await runner.setup()
    assert runner.server is not None
    factory = capped(runner.server, ConnectionCap(settings.http_max_conns_per_client))
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    bound: list[str] = []
    for n, addr in enumerate([*addrs, *tls_addrs]):
        tls = context if n >= len(addrs) else None
        try:
            if addr.is_unix:
                Path(addr.path).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addr.path)
                site = web.UnixSite(runner, addr.path, ssl_context=tls)
                await site.start()
                # The owner and the sidecars' group only (--unix-socket-mode/-group): whoever
                # connects may register services and take certificates.
                restrict_socket(
                    addr.path, settings.unix_socket_mode, settings.unix_socket_group
                )
                bound.append(f"unix:{addr.path}")
            else:
                # Not a TCPSite: the per-client cap wraps the protocol factory.
                server = await loop.create_server(
                    factory, addr.host, addr.port, reuse_address=True, ssl=tls
                )
                servers.append(server)
                port = server.sockets[0].getsockname()[1] if server.sockets else addr.port
                scheme = "https" if tls is not None else "http"
                bound.append(f"{scheme}://{Address(addr.host, port)}")
        except OSError as exc:
            await _stop_http(runner, servers)
            raise ServerError(f"cannot listen for HTTP on {addr}: {exc.strerror or exc}") from exc
    return runner, servers, bound


async def _stop_http(runner: web.AppRunner, servers: list[asyncio.AbstractServer]) -> None:
    """Stop listening, answer every blocking query, give writes the grace period, close."""
    for server in servers:
        server.close()
    await runner.cleanup()  # closes the connections, which wait_closed (3.12+) waits for
    for server in servers:
        await server.wait_closed()


def _advertised(settings: ServerSettings, bound: list[str]) -> tuple[str, ...]:
    """This datacenter's server address as other datacenters reach it: the given
    ``--advertise-addr-wan``, else the first bound plain HTTP address, else the first HTTPS
    one (``https://HOST:PORT``)."""
    if settings.advertise_addr_wan:
        return (settings.advertise_addr_wan,)
    plain = tuple(a for a in bound if a.startswith("http://"))
    secure = tuple(a for a in bound if a.startswith("https://"))
    return reachable_addrs(plain or secure, settings.node_address)[:1]


def _warn_if_open(settings: ServerSettings, addrs: list[Address]) -> None:
    """ACLs off on an address other hosts can reach: anyone there may take any identity."""
    if settings.acl_default_policy is not None:
        return
    exposed = [str(a) for a in addrs if not a.is_unix and not _loopback(a.host)]
    if exposed:
        log.warning(
            "ACLs are off and the server listens on %s: anyone who can reach it may register "
            "services, write intentions and take any service's certificate and key "
            "(give --acl-default-policy deny)",
            ", ".join(exposed),
        )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


async def _sweep_ttls(state: State) -> None:
    while True:
        await asyncio.sleep(state.settings.ttl_sweep_s)
        try:
            await state.catalog.expire_ttls()
        except LoomError as exc:
            log.error("TTL sweep failed: %s", exc)


async def _sweep_sessions(state: State) -> None:
    """Invalidate sessions whose TTL passed or whose linked checks failed."""
    while True:
        await asyncio.sleep(state.settings.ttl_sweep_s)
        try:
            await state.sessions.sweep()
        except LoomError as exc:
            log.error("session sweep failed: %s", exc)


async def _reap_tombstones(state: State) -> None:
    """Remove KV tombstones older than ``kv_tombstone_ttl_s``."""
    while True:
        await asyncio.sleep(state.settings.ttl_sweep_s)
        try:
            await state.kv.reap_tombstones()
        except LoomError as exc:
            log.error("tombstone reaping failed: %s", exc)


async def _flush_log_summaries() -> None:
    """Floods that stopped still get their "suppressed N similar messages" line."""
    while True:
        await asyncio.sleep(RateSettings().interval_s)
        flush_all()


async def serve(
    settings: ServerSettings,
    ready: Callable[[list[str], list[str]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None)."""
    http_addrs = [parse_address(a, "--http-addr") for a in settings.http_addrs]
    grpc_addrs = [parse_address(a, "--grpc-addr") for a in settings.grpc_addrs]
    https_addrs = [parse_address(a, "--https-addr") for a in settings.https_addrs]
    grpc_tls_addrs = [parse_address(a, "--grpc-tls-addr") for a in settings.grpc_tls_addrs]
    state = State(settings)
    await state.start()
    try:
        await state.register_self()  # its node and the consul service, as Consul's servers
    except BaseException:
        await state.close()
        raise
    tls = None
    if https_addrs or grpc_tls_addrs:
        try:
            tls = prepare_tls(state)
        except BaseException:
            await state.close()
            raise
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        runner, http_servers, http_bound = await _start_http(
            state, http_addrs, https_addrs, tls.ssl_context if tls else None
        )
    except BaseException:
        if tls is not None:
            tls.close()
        await state.close()
        raise
    _warn_if_open(settings, http_addrs + grpc_addrs + https_addrs + grpc_tls_addrs)
    # How other datacenters are dialed (a --no-http server: over HTTPS only), and what they
    # dial here: a bound port (a :0 listener's real one).
    try:
        wan.use_tls(state, wan_client_context(state, tls), tls_only=not http_addrs)
    except BaseException:
        await _stop_http(runner, http_servers)
        if tls is not None:
            tls.close()
        await state.close()
        raise
    state.federation.own_servers = _advertised(settings, http_bound)
    state.federation.call = functools.partial(wan.call, state)
    grpc_bound: list[str] = []
    stop_xds: Callable[[], Awaitable[None]] | None = None
    try:
        if grpc_addrs or grpc_tls_addrs:
            credentials = tls.grpc_credentials if tls else None
            grpc_bound, stop_xds = await start_xds(
                state, grpc_addrs, grpc_tls_addrs, credentials
            )
        background = [
            asyncio.create_task(_sweep_ttls(state)),
            asyncio.create_task(run_server_checks(state)),
            asyncio.create_task(run_liveness(state)),
            asyncio.create_task(_sweep_sessions(state)),
            asyncio.create_task(_reap_tombstones(state)),
            asyncio.create_task(_flush_log_summaries()),
            asyncio.create_task(state.remote_vips.run()),
            asyncio.create_task(run_federation(state)),
            asyncio.create_task(run_replication(state)),
        ]
        if state.certs.is_secondary:  # the primary signs this datacenter's intermediate
            background.append(asyncio.create_task(run_federated_ca(state)))
        gctune.settle()  # the process is loom server's own: only the CLI calls serve
        if ready is not None:
            if tls is not None:
                _say_tls(tls)
            plain = len(grpc_addrs)
            ready(
                http_bound,
                grpc_bound[:plain] + [f"https://{a}" for a in grpc_bound[plain:]],
            )
        await stop.wait()
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        flush_all()
        if stop_xds is not None:
            await stop_xds()
        await _stop_http(runner, http_servers)
        await wan.close(state)
        if tls is not None:
            tls.close()
        await state.close()


def _say_tls(tls: ServingTls) -> None:
    """Where a client finds what to trust (the built-in CA's roots), one line."""
    parts = []
    if tls.ca_file is not None:
        parts.append(f"server certificate from the built-in CA, clients trust {tls.ca_file}")
    else:
        parts.append("server certificate from --tls-cert-file")
    if tls.verify_incoming:
        parts.append("client certificates required")
    print(f"loom server: TLS: {', '.join(parts)}")
    sys.stdout.flush()


def print_ready(settings: ServerSettings) -> Callable[[list[str], list[str]], None]:
    def show(http: list[str], grpc: list[str]) -> None:
        store = "memory (--dev: nothing survives a restart)"
        if settings.data_dir is not None:
            store = f"sqlite at {settings.data_dir}"
        if settings.etcd_endpoints:
            store = f"etcd at {','.join(settings.etcd_endpoints)} prefix {settings.etcd_prefix}"
        policy = "allow" if settings.default_allow else "deny"
        acls = settings.acl_default_policy
        acl_text = f"ACLs on (default policy {acls})" if acls else "ACLs off"
        for addr in http:
            kind = "HTTPS API" if addr.startswith("https://") else "HTTP API"
            print(f"loom server: {kind} on {addr}")
        web_ui = next((a for a in http if not a.startswith("unix:")), None)
        if settings.ui and web_ui is not None:
            print(f"loom server: web UI on {web_ui}/ui/")
        for addr in grpc:
            if addr.startswith("https://"):
                print(f"loom server: xDS (gRPC ADS over TLS) on {addr.removeprefix('https://')}")
            else:
                print(f"loom server: xDS (gRPC ADS) on {addr}")
        only = ""
        if settings.https_addrs and not settings.http_addrs:
            only = ", HTTPS only (no plain HTTP listener)"
        print(
            f"loom server: datacenter {settings.datacenter}, store {store}, "
            f"default intention policy {policy}, {acl_text}{only}"
        )
        sys.stdout.flush()

    return show
