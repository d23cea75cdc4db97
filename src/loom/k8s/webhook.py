"""``loom k8s webhook``: the mutating admission webhook, an aiohttp HTTPS server.

Routes: ``POST /mutate`` (AdmissionReview ``admission.k8s.io/v1``, answered by
``admission.review``), ``GET /healthz``, ``GET /metrics`` (Prometheus text). The server only
moves bytes: it reads the body, calls the pure ``review`` and writes the answer. A review it
cannot answer (bad JSON, too deep, too big, wrong types) is a denial (``allowed: false``, code
400) naming the problem: HTTP 200 when the request's uid could be read, so the API server
shows the message, HTTP 400 when the body is not a review at all. An unexpected error is a
denial and a log line, never a crash or a half-made patch; log lines are rate-limited
(``loom.ratelog``), so hostile clients cannot flood the log.

Files are watched, not read in the handler: the TLS certificate and key are polled every
``reload_interval`` seconds and, once a new pair loads cleanly, installed in the live TLS
context (new connections get the new certificate; a broken pair is logged and the old one
kept). Namespace labels come from the review when it carries a ``namespaceObject``, else from
an optional YAML file (``{namespace: {label: value}}``) watched the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from loom import defaults, gctune
from loom.addrs import AddressError, parse_address
from loom.inject import InjectSettings
from loom.inject.plan import POD_SECURITY_ENFORCE
from loom.k8s.admission import (
    POD_SECURITY_PATH,
    MalformedReview,
    NamespaceLabels,
    PlanCache,
    error_answer,
    malformed_answer,
    review,
)
from loom.k8s.controller_loop import kube_client
from loom.k8s.errors import K8sError
from loom.k8s.metrics import WebhookMetrics
from loom.k8s.webhook_certs import CertManagerConfig, WebhookCertManager
from loom.ratelog import RateLimitedLog

log = logging.getLogger("loom.k8s.webhook")
limited = RateLimitedLog(log)

METRICS = web.AppKey("metrics", WebhookMetrics)
"""Where the application keeps its ``WebhookMetrics``."""

MAX_BODY = 8 * 1024 * 1024
"""Largest review accepted; Kubernetes objects are bounded by etcd's 1.5 MiB anyway."""


@dataclass(frozen=True)
class WebhookConfig:
    """How the webhook server runs (flags of ``loom k8s webhook``)."""

    tls_cert: Path
    """PEM certificate chain served to the API server."""
    tls_key: Path
    """PEM private key of the certificate."""
    listen: str = defaults.WEBHOOK_LISTEN
    """``HOST:PORT`` to listen on (``[::]:8443`` for IPv6; port 0 picks a free one)."""
    namespace_labels_file: Path | None = None
    """YAML ``{namespace: {label: value}}`` used when reviews carry no namespace object."""
    reload_interval: float = 1.0
    """Seconds between checks of the certificate and labels files for changes."""
    cert_manager: CertManagerConfig | None = None
    """Make, install and rotate the certificate (``tls_cert``/``tls_key`` are then in its
    ``cert_dir``); None: the files are mounted."""


class FileWatch:
    """Tells when any of some files changed (mtime, size or inode) since the last check."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        out: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return True


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) with the pair loaded; errors become ``K8sError``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_pair(context, cert, key)
    return context


def load_pair(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise K8sError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None


@dataclass
class NamespaceLabelCache:
    """Namespace labels by name, from the labels file (empty without one)."""

    path: Path | None = None
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def load(self) -> None:
        """(Re)read the file; raises ``K8sError`` when it cannot be read or parsed."""
        if self.path is None:
            return
        try:
            doc = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise K8sError(f"{self.path}: cannot read namespace labels: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise K8sError(f"{self.path}: expected {{namespace: {{label: value}}}}")
        self.labels = {str(ns): {str(k): str(v) for k, v in ls.items()} for ns, ls in doc.items()}

    def get(self, namespace: str) -> Mapping[str, str]:
        return self.labels.get(namespace, {})


def build_app(
    settings: InjectSettings,
    labels: NamespaceLabelCache,
    metrics: WebhookMetrics | None = None,
) -> web.Application:
    """The aiohttp application (no TLS, no listening: see ``serve``)."""
    stats = metrics if metrics is not None else WebhookMetrics()
    cache = PlanCache()

    async def mutate(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            exc = MalformedReview(f"body: larger than {MAX_BODY} bytes")
            return _malformed(request, exc, started)
        try:
            answer = review(body, settings, _labels_for(request, labels), cache)
        except MalformedReview as exc:
            return _malformed(request, exc, started)
        except Exception as exc:  # a bug: deny this pod, keep serving
            stats.observe("error", time.perf_counter() - started)
            limited.error("review bug", "internal error answering a review", exc_info=True)
            out = error_answer(body, f"loom webhook internal error: {type(exc).__name__}")
            return _json(out)
        stats.observe(answer.outcome, time.perf_counter() - started)
        if answer.outcome == "refused":
            log.info("refused: %s", answer.message)
        return web.Response(body=answer.wire(), content_type="application/json")

    def _malformed(request: web.Request, exc: MalformedReview, started: float) -> web.Response:
        stats.observe("malformed", time.perf_counter() - started)
        limited.warning("malformed review", "malformed review from %s: %s", request.remote, exc)
        return _json(malformed_answer(exc), status=200 if exc.uid else 400)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(
            body=stats.render().encode(), content_type="text/plain", charset="utf-8"
        )

    app = web.Application(client_max_size=MAX_BODY)
    app[METRICS] = stats
    app.router.add_post("/mutate", mutate)
    app.router.add_post(POD_SECURITY_PATH + "{level}", mutate)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


def _labels_for(request: web.Request, labels: NamespaceLabelCache) -> NamespaceLabels:
    level = request.match_info.get("level")
    if level is None:
        return labels.get
    return lambda ns: {**labels.get(ns), POD_SECURITY_ENFORCE: level}


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _json(doc: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=_ENCODER.encode(doc).encode(), status=status, content_type="application/json"
    )


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``[V6]:PORT`` / ``:PORT`` -> (host, port), by ``loom.addrs``."""
    try:
        addr = parse_address(listen, "--listen", unix=False)
    except AddressError as exc:
        raise K8sError(str(exc)) from None
    return addr.host, addr.port


async def watch_files(
    config: WebhookConfig,
    context: ssl.SSLContext,
    labels: NamespaceLabelCache,
    metrics: WebhookMetrics,
) -> None:
    """Reload the certificate pair and the labels file when they change (runs forever)."""
    certs = FileWatch(config.tls_cert, config.tls_key)
    labels_file = FileWatch(*(p for p in [config.namespace_labels_file] if p is not None))
    while True:
        await asyncio.sleep(config.reload_interval)
        if certs.changed():
            try:
                server_tls_context(config.tls_cert, config.tls_key)  # validate first
                load_pair(context, config.tls_cert, config.tls_key)
            except K8sError as exc:
                log.warning("keeping the previous certificate: %s", exc)
            else:
                metrics.cert_reloads += 1
                log.info("reloaded TLS certificate %s", config.tls_cert)
        if config.namespace_labels_file is not None and labels_file.changed():
            try:
                labels.load()
            except K8sError as exc:
                log.warning("keeping the previous namespace labels: %s", exc)
            else:
                log.info("reloaded namespace labels from %s", config.namespace_labels_file)


async def serve(
    config: WebhookConfig, settings: InjectSettings, ready: asyncio.Event | None = None
) -> None:
    """Run the webhook until SIGTERM/SIGINT (or cancellation)."""
    manager = None
    if config.cert_manager is not None:
        manager = WebhookCertManager(
            config.cert_manager, kube_client(config.cert_manager.kubeconfig)
        )
        await manager.ensure()
    context = server_tls_context(config.tls_cert, config.tls_key)
    labels = NamespaceLabelCache(config.namespace_labels_file)
    labels.load()
    metrics = WebhookMetrics()
    host, port = parse_listen(config.listen)
    runner = web.AppRunner(build_app(settings, labels, metrics), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(watch_files(config, context, labels, metrics))
    rotation = asyncio.create_task(manager.run()) if manager is not None else None
    try:
        site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise K8sError(f"cannot listen on {config.listen}: {exc.strerror}") from None
        for address in runner.addresses:
            print(f"loom k8s webhook: listening on https://{_fmt(address)}", flush=True)
        # Start-up's objects out of the collector's way, young collections rarer: with the
        # defaults, a middle or full collection every few hundred reviews stalled all 50 in
        # flight for up to a millisecond, the p99's tail (``loom.gctune``).
        gctune.settle()
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        watcher.cancel()
        if rotation is not None:
            rotation.cancel()
        await asyncio.gather(watcher, *[t for t in [rotation] if t], return_exceptions=True)
        await runner.cleanup()


def _fmt(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
