"""``loom dataplane``: find the proxy's registration, keep its identity, write the bootstrap,
run Envoy.

Converges whatever the start order: it waits (with a log line every few seconds) for the
server to answer and for the proxy to be registered, starts Envoy, restarts it if it dies
(backing off), and on SIGTERM/SIGINT drains inbound listeners and exits. If Envoy cannot
start at all, it exits non-zero with Envoy's own last log lines. While Envoy runs it keeps
checking the registration, so that a proxy the server no longer knows (deregistered, or a
server restarted with an empty store) is said here: the server then sends it nothing and
Envoy keeps its last configuration. The agent makes the workload's private key, has its CSR
signed and serves leaf and roots to Envoy over SDS on a unix socket in its work directory
(``identity``, ``sds``): the key never leaves this process and its Envoy. A mesh gateway
(``Kind: mesh-gateway``) runs the same way without any of that: it forwards TLS it never
terminates, so it has no key, no leaf and no SDS socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom import defaults
from loom.addrs import parse_address
from loom.api import AsyncClient, ClientError, NotFoundError, TlsSettings, tls_from
from loom.api.watching import WatchPolicy, request_timeout
from loom.dataplane.bootstrap import XdsTls, build_bootstrap
from loom.dataplane.envoy import Envoy, EnvoySettings
from loom.dataplane.errors import DataplaneError, EnvoyError
from loom.dataplane.heap import trim_every
from loom.dataplane.identity import WorkloadIdentity
from loom.dataplane.sds import SecretStore, serve_sds, socket_path

log = logging.getLogger("loom.dataplane")
KINDS = ("connect-proxy", "mesh-gateway")
"""The registrations a dataplane runs: a sidecar, or a mesh gateway."""


@dataclass(frozen=True)
class DataplaneSettings:
    proxy_id: str
    """Service ID of the sidecar registration (``<service-id>-sidecar-proxy``)."""
    http_addr: str = defaults.HTTP_ADDR
    """Server HTTP API: HOST:PORT or unix:PATH."""
    grpc_addr: str = defaults.GRPC_ADDR
    """Server xDS endpoint: HOST:PORT or unix:PATH; ``https://HOST:PORT``: over TLS."""
    token: str = ""
    """ACL token (SecretID) for the HTTP API and, as gRPC metadata ``x-consul-token``, the
    xDS stream; empty: the anonymous token (ACLs off need none)."""
    tls: TlsSettings | None = None
    """How the server is verified over https and TLS gRPC (``--ca-file``, client
    certificate, server name); None: from the environment (``CONSUL_CACERT``...)."""
    grpc_ca_file: str | None = None
    """CA file Envoy verifies the TLS xDS server with; None: ``tls.ca_file``."""
    admin_bind: str = defaults.ENVOY_ADMIN_BIND
    """Envoy admin listener; port 0 picks a free one."""
    work_dir: Path | None = None
    """Bootstrap, logs and admin address file; a fresh temporary directory when None."""
    log_level: str = "warning"
    """Envoy's log level (Envoy logs ~130 lines at info on start)."""
    delta: bool = True
    """Delta xDS (default) or State-of-the-World."""
    extra_args: tuple[str, ...] = field(default=())
    """Extra Envoy command-line arguments."""
    drain_seconds: float = 5.0
    """How long inbound listeners drain on shutdown before Envoy is stopped."""
    dns_port: int | None = None
    """Serve the DNS proxy on 127.0.0.1:PORT (None: no DNS proxy)."""
    metrics_bind: str | None = None
    """HOST:PORT of the Prometheus endpoint (Envoy's stats, the agent's own and the app's,
    merged: ``loom.dataplane.metrics``); None: no endpoint."""
    metrics_path: str = "/metrics"
    """Path of that endpoint (consul-k8s's ``prometheus-scrape-path``, default /metrics)."""
    service_metrics_url: str | None = None
    """``http://127.0.0.1:PORT/PATH`` of the app's own metrics, merged in (consul-k8s's
    ``service-metrics-port``/``-path``); None: Envoy's and the agent's only."""
    concurrency: int = 2
    """Envoy worker threads (Istio's sidecar default is 2; 1 suits many sidecars on few cores)."""
    wait_log_s: float = 5.0
    """How often to say what the dataplane is waiting for."""
    registration_check_s: float = 2.0
    """How often a running dataplane whose proxy is not registered (or whose server is away)
    reads its registration again; while it is registered, a blocking query waits instead."""
    registration_timeout_s: float | None = None
    """Give up (exit non-zero) if the server or the registration is not there within this
    many seconds; None waits as long as it takes (any start order converges)."""
    ready_timeout_s: float = 60.0
    """How long Envoy may take to be ready with every listener accepted before that start
    counts as failed (the first one is an exit with the reason, e.g. a rejected listener)."""
    on_ready: Callable[[tuple[str, int] | None], Awaitable[None] | None] | None = None
    """Called once Envoy is ready, with its admin address (tests, readiness files)."""
    run_envoy: bool = True
    """False: keep the identity and serve SDS only, for an Envoy run by someone else (its
    bootstrap from ``loom connect envoy --bootstrap --sds-socket``)."""
    enable_script_checks: bool = False
    """Run the script checks (``Args``) of this proxy's service (``--enable-script-checks``;
    the server must allow them too, or they cannot be registered)."""
    checks_poll_s: float = 1.0
    """How often the agent re-reads its checks and Envoy's listener state, in seconds."""


async def fetch_registration(client: AsyncClient, proxy_id: str) -> dict[str, Any]:
    """The proxy's registration (``GET /v1/agent/service/ID``); it must be a connect-proxy or
    a mesh-gateway."""
    reg: dict[str, Any] = await client.get(f"/v1/agent/service/{proxy_id}")
    if reg.get("Kind") not in KINDS:
        raise DataplaneError(
            f"service {proxy_id!r} is registered but is not a connect-proxy or mesh-gateway"
        )
    return reg


def is_gateway(reg: dict[str, Any]) -> bool:
    return reg.get("Kind") == "mesh-gateway"


def service_of(reg: dict[str, Any]) -> str:
    """Whom the proxy stands for: a sidecar's destination service, a gateway's own name."""
    if is_gateway(reg):
        return str(reg.get("Service", ""))
    return str(reg["Proxy"]["DestinationServiceName"])


async def registered_proxies(client: AsyncClient) -> str:
    """Which proxies the server's node has, for a message about a proxy it does not have."""
    try:
        node = (await client.get("/v1/agent/self"))["Config"]["NodeName"]
    except (ClientError, KeyError, TypeError):
        node = "the server's node"
    else:
        node = f"node {node!r}"
    try:
        services: dict[str, Any] = await client.get("/v1/agent/services")
    except ClientError as exc:
        return f"cannot list the proxies of {node}: {exc}"
    ids = sorted(
        sid
        for sid, svc in services.items()
        if isinstance(svc, dict) and svc.get("Kind") in KINDS
    )
    if not ids:
        return f"{node} has no proxies registered"
    return f"proxies registered on {node}: {', '.join(ids)}"


def api_client(settings: DataplaneSettings) -> AsyncClient:
    """The one client every call of the agent makes: its token and TLS settings."""
    return AsyncClient(settings.http_addr, timeout=10, token=settings.token, tls=settings.tls)


async def wait_for_registration(
    settings: DataplaneSettings, stop: asyncio.Event
) -> dict[str, Any] | None:
    """The registration, once there; None if ``stop`` is set first.

    Raises ``DataplaneError`` naming the node's registered proxies once
    ``registration_timeout_s`` has passed without it.
    """
    client = api_client(settings)
    started = last_log = time.monotonic()
    first = True
    deadline = (
        None
        if settings.registration_timeout_s is None
        else started + settings.registration_timeout_s
    )
    while not stop.is_set():
        try:
            return await fetch_registration(client, settings.proxy_id)
        except NotFoundError:
            why = f"proxy {settings.proxy_id!r} is not registered yet"
            known = True
        except ClientError as exc:
            why = str(exc)
            known = False
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            if known:
                why = (
                    f"proxy {settings.proxy_id!r} is not registered after "
                    f"{settings.registration_timeout_s:g} s; {await registered_proxies(client)}"
                )
            else:
                waited = settings.registration_timeout_s
                why = f"no answer from the server after {waited:g} s: {why}"
            raise DataplaneError(why)
        if first or now - last_log >= settings.wait_log_s:
            if known:
                why = f"{why} ({await registered_proxies(client)})"
            log.warning("waiting: %s", why)
            last_log, first = now, False
        pause = 0.5 if deadline is None else max(0.0, min(0.5, deadline - now))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
    return None


def xds_tls_for(settings: DataplaneSettings) -> XdsTls | None:
    """Envoy's TLS to an ``https://`` xDS address; None for a plaintext one."""
    xds = parse_address(settings.grpc_addr, "--grpc-addr")
    if not xds.tls:
        return None
    tls = settings.tls or tls_from()
    ca = settings.grpc_ca_file or tls.ca_file
    if not ca and not tls.ca_pem:
        raise DataplaneError(
            f"--grpc-addr {settings.grpc_addr}: TLS needs the CA to verify the server "
            "(--grpc-ca-file or --ca-file, $CONSUL_GRPC_CACERT, $CONSUL_CACERT or "
            "$CONSUL_CACERT_PEM)"
        )
    return XdsTls(
        ca_file=str(Path(ca).absolute()) if ca else "",
        ca_pem=None if ca else tls.ca_pem,
        server_name=tls.server_name or xds.host,
        cert_file=str(Path(tls.cert_file).absolute()) if tls.cert_file else None,
        key_file=str(Path(tls.key_file).absolute()) if tls.key_file else None,
    )


def bootstrap_for(
    settings: DataplaneSettings, reg: dict[str, Any], sds_socket: Path | None
) -> dict[str, Any]:
    """``sds_socket``: the agent's SDS socket; None for a mesh gateway (it has no secrets)."""
    admin = parse_address(settings.admin_bind, "--admin-bind")
    return build_bootstrap(
        proxy_id=settings.proxy_id,
        service=service_of(reg),
        namespace=reg.get("Namespace", "default"),
        xds=parse_address(settings.grpc_addr, "--grpc-addr"),
        xds_tls=xds_tls_for(settings),
        admin_address=admin.host,
        admin_port=admin.port,
        delta=settings.delta,
        token=settings.token,
        sds_socket=str(sds_socket) if sds_socket is not None else None,
    )


async def run_dataplane(settings: DataplaneSettings, stop: asyncio.Event | None = None) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    reg = await wait_for_registration(settings, stop)
    if reg is None:
        return 0
    async with contextlib.AsyncExitStack() as extras:
        work = _work_dir(settings, extras)
        sds = None
        if not is_gateway(reg):  # a mesh gateway holds no key: it passes TLS through
            sds = await _start_identity(settings, reg, work, stop, extras)
            if sds is None:
                return 0  # stopped while the CA was not ready
        await _start_extras(settings, reg, work, stop, extras)
        watcher = asyncio.create_task(watch_registration(settings, stop))
        extras.push_async_callback(_cancel, watcher)
        trimmer = asyncio.create_task(trim_every())  # issue 17: freed heap back to the system
        extras.push_async_callback(_cancel, trimmer)
        if not settings.run_envoy:
            _start_checks(settings, reg, None, stop, extras)
            if sds is None:  # a gateway's Envoy run by hand: its checks are all there is
                log.info("running the checks of mesh gateway %s", settings.proxy_id)
            else:
                log.info("serving the secrets of proxy %s over SDS on %s", settings.proxy_id, sds)
            await stop.wait()
            return 0
        return await _run_envoy(settings, reg, work, sds, stop, extras)


def _start_checks(
    settings: DataplaneSettings,
    reg: dict[str, Any],
    envoy: Envoy | None,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
) -> None:
    """Run this proxy's checks and its destination's (``loom.dataplane.checks``)."""
    from loom.dataplane.checks import run_checks

    task = asyncio.create_task(
        run_checks(
            api_client(settings),
            settings.proxy_id,
            (reg.get("Proxy") or {}).get("DestinationServiceID", ""),
            envoy,
            stop,
            settings.enable_script_checks,
            settings.checks_poll_s,
        )
    )
    stack.push_async_callback(_cancel, task)


def _work_dir(settings: DataplaneSettings, stack: contextlib.AsyncExitStack) -> Path:
    """The work directory (0700: it holds the bootstrap's token and the SDS socket); a
    temporary one, removed at exit, when none is given."""
    if settings.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"loom-dp-{settings.proxy_id[:20]}-")
        stack.callback(tmp.cleanup)
        work = Path(tmp.name)
    else:
        work = settings.work_dir
        work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o700)
    return work


async def _start_identity(
    settings: DataplaneSettings,
    reg: dict[str, Any],
    work: Path,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
) -> Path | None:
    """Key, signed leaf and roots before Envoy starts; then SDS on ``work/sds.sock`` and the
    renewal loop. Returns the socket's path (None: ``stop`` came while waiting for the CA)."""
    client = api_client(settings)
    store = SecretStore()
    identity = WorkloadIdentity(
        client,
        service=reg["Proxy"]["DestinationServiceName"],
        namespace=reg.get("Namespace") or "default",
        datacenter=reg.get("Datacenter") or "dc1",
        store=store,
        proxy_id=settings.proxy_id,
    )
    if not await identity.start(stop):
        return None
    path, short = socket_path(work)
    if short is not None:
        stack.callback(shutil.rmtree, short, True)
    stack.push_async_callback(await serve_sds(store, path))
    renewal = asyncio.create_task(identity.run(stop))
    stack.push_async_callback(_cancel, renewal)
    return path


REGISTRATION_WAIT = "5m"
"""How long the server may hold the registration's blocking query (Consul's longest)."""


async def watch_registration(settings: DataplaneSettings, stop: asyncio.Event) -> None:
    """Log when the proxy stops (and starts again) being registered on the server.

    While it is registered this is a blocking query on its registration's content hash (the
    server answers when the registration changed or went); while it is not, or the server is
    away, a read every ``registration_check_s``.
    """
    client = api_client(settings)
    path = f"/v1/agent/service/{settings.proxy_id}"
    timeout = request_timeout(REGISTRATION_WAIT, WatchPolicy())
    registered, digest = True, ""
    while not stop.is_set():
        now: bool | None = None
        try:
            if digest:
                params = {"hash": digest, "wait": REGISTRATION_WAIT}
                answer = await client.request("GET", path, params=params, timeout=timeout)
            else:
                answer = await client.request("GET", path)
            now = True
            digest = str((answer.body or {}).get("ContentHash") or "")
        except NotFoundError:
            now, digest = False, ""
        except ClientError:
            digest = ""  # the server is away (restarting): nothing to say about the proxy
        if now is not None and now != registered:
            if now:
                log.info("proxy %r is registered again", settings.proxy_id)
            else:
                log.warning(
                    "proxy %r is not registered on the server; Envoy keeps its last "
                    "configuration until it is registered again",
                    settings.proxy_id,
                )
            registered = now
        if not digest:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.registration_check_s)


async def _start_extras(
    settings: DataplaneSettings,
    reg: dict[str, Any],
    work: Path,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
) -> None:
    """The DNS proxy (before Envoy, so the app resolves from its first query) and metrics."""
    proxy = None
    if settings.dns_port is not None:
        from loom.dns.server import DnsProxy, DnsSettings
        from loom.dns.watch import watch_table

        proxy = DnsProxy(
            DnsSettings(listen_port=settings.dns_port, namespace=reg.get("Namespace", "default"))
        )
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        watcher = asyncio.create_task(
            watch_table(settings.http_addr, proxy, stop, settings.token, settings.tls)
        )
        stack.push_async_callback(_cancel, watcher)
        log.info("DNS proxy on 127.0.0.1:%d", settings.dns_port)
    if settings.metrics_bind:
        from loom.dataplane.metrics import serve_metrics, sources

        scrape = sources(
            work,
            settings.proxy_id,
            service_of(reg),
            lambda: proxy.metrics_text() if proxy is not None else "",
            settings.service_metrics_url,
        )
        await serve_metrics(settings.metrics_bind, settings.metrics_path, scrape, stack)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _run_envoy(
    settings: DataplaneSettings,
    reg: dict[str, Any],
    work: Path,
    sds: Path | None,
    stop: asyncio.Event,
    stack: contextlib.AsyncExitStack,
) -> int:
    config = work / "bootstrap.json"  # holds the ACL token: 0600 in the 0700 work dir
    write_private(config, json.dumps(bootstrap_for(settings, reg, sds), indent=2))
    envoy = Envoy(
        EnvoySettings(
            config_path=config,
            work_dir=work,
            log_level=settings.log_level,
            extra_args=settings.extra_args,
            drain_seconds=settings.drain_seconds,
            concurrency=settings.concurrency,
            ready_timeout_s=settings.ready_timeout_s,
        )
    )
    _start_checks(settings, reg, envoy, stop, stack)
    try:
        return await _supervise(envoy, settings, stop)
    finally:
        (work / "ready").unlink(missing_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (0600 from its creation on, never wider)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def _supervise(envoy: Envoy, settings: DataplaneSettings, stop: asyncio.Event) -> int:
    first = True
    backoff = 0.5
    while not stop.is_set():
        await envoy.start()
        try:
            if not await envoy.wait_ready(stop):
                break
        except EnvoyError as exc:
            await envoy.stop()
            if first:
                raise DataplaneError(str(exc)) from exc
            log.error("%s; restarting in %.1f s", exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        if first:
            log.info("Envoy ready for proxy %s (admin %s)", settings.proxy_id, envoy.admin)
            # A file others can watch (loom local, readiness probes): Envoy is serving.
            (envoy.s.work_dir / "ready").write_text(f"{envoy.admin}\n")
        first = False
        backoff = 0.5
        if settings.on_ready is not None:
            maybe = settings.on_ready(envoy.admin)
            if maybe is not None:
                await maybe
        waiter = asyncio.create_task(envoy.wait())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            waiter.cancel()
            await envoy.drain_and_stop()
            return 0
        stopper.cancel()
        log.error("Envoy exited with status %s; restarting", waiter.result())
    await envoy.stop()
    return 0
