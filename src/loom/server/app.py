"""Runs the control plane: store, HTTP API, xDS gRPC server, background sweepers.

``run(settings)`` is what ``loom server`` calls. It prints one line per listener, with the
real port when port 0 was asked for, so scripts and tests can find the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from loom.addrs import Address, parse_address
from loom.control.state import ServerSettings, State
from loom.errors import LoomError
from loom.ratelog import RateSettings, flush_all
from loom.server.clientlog import AiohttpLog
from loom.server.conns import ConnectionCap, capped
from loom.server.http import build_app
from loom.xds.server import start_xds

log = logging.getLogger("loom.server")


class ServerError(LoomError):
    """The server could not start (port taken, bad data dir...)."""


async def _start_http(
    state: State, addrs: list[Address]
) -> tuple[web.AppRunner, list[asyncio.AbstractServer], list[str]]:
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
    )
    await runner.setup()
    assert runner.server is not None
    factory = capped(runner.server, ConnectionCap(settings.http_max_conns_per_client))
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    bound: list[str] = []
    for addr in addrs:
        try:
            if addr.is_unix:
                Path(addr.path).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addr.path)
                site = web.UnixSite(runner, addr.path)
                await site.start()
                # Sidecars run as an unprivileged proxy UID and must be able to connect.
                os.chmod(addr.path, 0o666)
                bound.append(f"unix:{addr.path}")
            else:
                # Not a TCPSite: the per-client cap wraps the protocol factory.
                server = await loop.create_server(factory, addr.host, addr.port, reuse_address=True)
                servers.append(server)
                port = server.sockets[0].getsockname()[1] if server.sockets else addr.port
                bound.append(f"http://{Address(addr.host, port)}")
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
    state = State(settings)
    await state.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner, http_servers, http_bound = await _start_http(state, http_addrs)
    _warn_if_open(settings, http_addrs + grpc_addrs)
    grpc_bound: list[str] = []
    stop_xds: Callable[[], Awaitable[None]] | None = None
    try:
        if grpc_addrs:
            grpc_bound, stop_xds = await start_xds(state, grpc_addrs)
        background = [
            asyncio.create_task(_sweep_ttls(state)),
            asyncio.create_task(_flush_log_summaries()),
        ]
        if ready is not None:
            ready(http_bound, grpc_bound)
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
        await state.close()


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
            print(f"loom server: HTTP API on {addr}")
        for addr in grpc:
            print(f"loom server: xDS (gRPC ADS) on {addr}")
        print(
            f"loom server: datacenter {settings.datacenter}, store {store}, "
            f"default intention policy {policy}, {acl_text}"
        )
        sys.stdout.flush()

    return show
