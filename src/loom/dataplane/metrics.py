"""The dataplane's one Prometheus endpoint: Envoy's stats, the agent's own and the app's, merged.

consul-k8s's metrics merging (``consul.hashicorp.com/enable-metrics-merging``) has the
sidecar serve, on one port a pod annotation names (``prometheus.io/port``, 20200), Envoy's
metrics together with the application's, so Prometheus scrapes one target per pod. The
dataplane does the same on ``--metrics-bind``: each scrape asks Envoy's admin API for
``/stats/prometheus`` (the address from the file Envoy writes, so a restarted Envoy is
found), the application's ``--service-metrics-url`` when set, and adds the agent's own
(``loom_dataplane_*`` and the DNS proxy's ``loom_dns_*``). The texts are concatenated in
that order (Prometheus's text format allows families in any order; each source names its
own), and a source that does not answer is left out and reported as
``loom_dataplane_metrics_source_up{source="..."} 0``: a scrape never fails because the app
is down.

``merge_metrics`` is pure; ``serve_metrics`` is the aiohttp endpoint around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from loom.addrs import Address, parse_address
from loom.api.codec import Request
from loom.api.errors import ClientError
from loom.api.transport import StreamTransport
from loom.dataplane.errors import DataplaneError

log = logging.getLogger("loom.dataplane.metrics")
SCRAPE_TIMEOUT_S = 5.0
"""Longest wait for one source (Prometheus's default scrape timeout is 10 s)."""
ENVOY_STATS_PATH = "/stats/prometheus"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus's text exposition format."""
MAX_BODY = 32 * 1024 * 1024
"""A source's text larger than this is refused (an app must not exhaust the agent)."""


@dataclass(frozen=True)
class Scraped:
    """One source's answer."""

    source: str
    """``envoy``, ``agent`` or ``app``: the ``source`` label of its up gauge."""
    text: str | None
    """Its exposition text; None when it did not answer (or answered an error)."""


def merge_metrics(parts: Sequence[Scraped]) -> str:
    """The sources' texts in order, each ending with a newline, then one gauge family saying
    which sources answered."""
    out: list[str] = []
    for part in parts:
        if part.text:
            out.append(part.text if part.text.endswith("\n") else part.text + "\n")
    out.append(
        "# HELP loom_dataplane_metrics_source_up Whether a source of the merged metrics "
        "answered this scrape.\n# TYPE loom_dataplane_metrics_source_up gauge\n"
    )
    for part in parts:
        up = 0 if part.text is None else 1
        out.append(f'loom_dataplane_metrics_source_up{{source="{part.source}"}} {up}\n')
    return "".join(out)


def agent_metrics(proxy_id: str, service: str, envoy_ready: bool, dns_text: str) -> str:
    """The agent's own: who it is, whether its Envoy is ready, its DNS proxy's counters."""
    return (
        "# HELP loom_dataplane_info The proxy this dataplane runs.\n"
        "# TYPE loom_dataplane_info gauge\n"
        f'loom_dataplane_info{{proxy_id="{_label(proxy_id)}",service="{_label(service)}"}} 1\n'
        "# HELP loom_dataplane_envoy_ready Whether Envoy is ready (every listener accepted).\n"
        "# TYPE loom_dataplane_envoy_ready gauge\n"
        f"loom_dataplane_envoy_ready {1 if envoy_ready else 0}\n"
    ) + dns_text


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_metrics_url(url: str) -> tuple[Address, str]:
    """``http://HOST:PORT/PATH`` (the app's metrics) -> its address and path."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise DataplaneError(
            f"--service-metrics-url: {url!r} is not http://HOST:PORT/PATH (plain HTTP on "
            "the pod's loopback, as consul-dataplane's -telemetry-prom-service-metrics-url)"
        )
    path = parts.path or "/"
    return Address(parts.hostname, parts.port), path + (f"?{parts.query}" if parts.query else "")


async def fetch_text(address: Address, path: str) -> str | None:
    """GET ``path`` on ``address``: the body of a 200, else None (logged at debug level)."""
    try:
        response = await StreamTransport(address).send(
            Request("GET", path, str(address)), SCRAPE_TIMEOUT_S
        )
    except (TimeoutError, ClientError, OSError) as exc:
        log.debug("metrics source %s%s did not answer: %s", address, path, exc)
        return None
    if response.status != 200 or len(response.body) > MAX_BODY:
        log.debug("metrics source %s%s answered %d", address, path, response.status)
        return None
    return response.body.decode(errors="replace")


def envoy_admin(work: Path) -> Address | None:
    """Envoy's admin address, from the file it writes at start (None before that)."""
    with contextlib.suppress(OSError, ValueError, LookupError):
        text = (work / "admin-address").read_text().strip()
        if text:
            return parse_address(text, "Envoy's admin address file", unix=False)
    return None


Source = Callable[[], Awaitable[Scraped]]


def sources(
    work: Path,
    proxy_id: str,
    service: str,
    dns_text: Callable[[], str],
    app_url: str | None,
) -> list[Source]:
    """Envoy's stats, the agent's own and (with ``app_url``) the app's, in that order."""
    app = parse_metrics_url(app_url) if app_url else None

    async def envoy() -> Scraped:
        admin = envoy_admin(work)
        text = None if admin is None else await fetch_text(admin, ENVOY_STATS_PATH)
        return Scraped("envoy", text)

    async def agent() -> Scraped:
        ready = (work / "ready").exists()
        return Scraped("agent", agent_metrics(proxy_id, service, ready, dns_text()))

    async def application() -> Scraped:
        assert app is not None
        return Scraped("app", await fetch_text(*app))

    return [envoy, agent, *([application] if app is not None else [])]


async def serve_metrics(
    bind: str, path: str, scrape: Sequence[Source], stack: contextlib.AsyncExitStack
) -> None:
    """Serve the merged text on ``bind`` at ``path`` until ``stack`` closes."""
    from aiohttp import web

    async def metrics(_: web.Request) -> web.Response:
        parts = await asyncio.gather(*(s() for s in scrape))
        return web.Response(
            body=merge_metrics(parts).encode(),
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
        )

    app = web.Application()
    app.router.add_get(path, metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    addr = parse_address(bind, "--metrics-bind")
    try:
        await web.TCPSite(runner, addr.host, addr.port).start()
    except OSError as exc:
        await runner.cleanup()
        raise DataplaneError(f"cannot serve metrics on {addr}: {exc.strerror}") from exc
    stack.push_async_callback(runner.cleanup)
    log.info("merged metrics on http://%s%s", addr, path)
