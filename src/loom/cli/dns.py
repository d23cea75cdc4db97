"""``loom dns-proxy``: the DNS proxy on its own, for VMs, debugging and tests.

Inside pods the proxy runs embedded in ``loom dataplane``; this command runs the same
``DnsProxy`` with a table watched from the server (``--server``) or read from a JSON file
(``--table``, reloaded when it changes), until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from loom.dns.settings import DnsSettings

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from aiohttp import web

    from loom.cli import Commands
    from loom.dns import DnsProxy, NameTable

DESCRIPTION = """\
Run Loom's DNS proxy standalone. Mesh names (Kubernetes svc.ns.svc.<domain> and its short
forms, svc.virtual.consul, svc.service.consul, headless pods, external hosts, other
datacenters) are answered from the name table; auto-path answers <name>.<search domain> with a
CNAME at once; everything else is forwarded to the nameservers of --resolv-conf (or --upstream)
with a cache. The table comes from the server (--server, a blocking query on
/v1/loom/dns-table) or from a JSON file in the same format (--table, reloaded on change; see
docs/dns.md).

Note: the proxy's own upstream queries must not be redirected back to it. In pods it runs as
the proxy UID, which `loom connect redirect-traffic --dns-port` excludes.
"""


def register(commands: Commands) -> None:
    parser = commands.top.add_parser(
        "dns-proxy",
        help="run the DNS proxy standalone (mesh names + caching forwarder)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--server",
        metavar="ADDR",
        help="server HTTP address to watch the table from: HOST:PORT, "
        "http(s)://HOST:PORT or unix:/path/to.sock",
    )
    source.add_argument(
        "--table", metavar="FILE", help="name table JSON file (the /v1/loom/dns-table format)"
    )
    d = DnsSettings()
    parser.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        default=f"{d.listen_host}:{d.listen_port}",
        help="UDP and TCP address to answer on (default %(default)s)",
    )
    parser.add_argument(
        "--resolv-conf",
        metavar="FILE",
        default=d.resolv_conf,
        help="resolv.conf giving upstream nameservers and the search list (default %(default)s)",
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        default=d.namespace,
        help="the proxy's own namespace, for short names (default %(default)s)",
    )
    parser.add_argument(
        "--cluster-domain",
        metavar="D",
        default=d.cluster_domain,
        help="Kubernetes cluster domain (default %(default)s)",
    )
    parser.add_argument(
        "--upstream",
        metavar="ADDR[:PORT]",
        action="append",
        default=[],
        help="forward to this resolver instead of resolv.conf's (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=d.upstream_timeout_s,
        help="per upstream server timeout (default %(default)s)",
    )
    parser.add_argument(
        "--cache-size",
        metavar="N",
        type=int,
        default=d.cache_size,
        help="forwarded answers kept, 0 disables (default %(default)s)",
    )
    parser.add_argument(
        "--no-autopath",
        action="store_true",
        help="do not answer <name>.<search domain> with a CNAME (to compare)",
    )
    parser.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        help="serve Prometheus metrics at http://ADDR:PORT/metrics and the index of the "
        "table answered from at /table (?index=N&wait=S: once it is N or more)",
    )
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> DnsSettings:
    """The proxy settings an invocation asks for (pure; raises DnsError on bad values)."""
    from loom.dns.resolvconf import parse_address

    host, port = parse_address(args.listen, DnsSettings.listen_port)
    return DnsSettings(
        listen_host=host,
        listen_port=port,
        resolv_conf=args.resolv_conf,
        namespace=args.namespace.lower(),
        cluster_domain=args.cluster_domain.lower().rstrip("."),
        upstream_timeout_s=args.timeout,
        cache_size=args.cache_size,
        autopath=not args.no_autopath,
        upstreams=tuple(args.upstream),
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from loom.dns import load_table_file

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="loom dns-proxy: %(message)s")
    settings = settings_from(args)
    table = load_table_file(args.table) if args.table else None
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_serve(args, settings, table))


async def _serve(args: argparse.Namespace, settings: DnsSettings, table: NameTable | None) -> int:
    import asyncio
    import signal

    from loom.dns import DnsProxy, watch_table, watch_table_file

    proxy = DnsProxy(settings, table)
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics_runner = await _serve_metrics(args.metrics, proxy) if args.metrics else None
    if args.server:
        watcher = asyncio.create_task(watch_table(args.server, proxy, stop))
    else:
        watcher = asyncio.create_task(watch_table_file(args.table, proxy, stop))
    from loom import gctune

    gctune.settle()  # the process is loom dns-proxy's own (the dataplane's is not)
    try:
        await stop.wait()
    finally:
        stop.set()
        await watcher
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await proxy.stop()
    return 0


async def _serve_metrics(addr: str, proxy: DnsProxy) -> web.AppRunner:
    from aiohttp import web

    from loom.dns.errors import BindError
    from loom.dns.resolvconf import parse_address

    host, port = parse_address(addr, 9153)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=proxy.metrics_text(), content_type="text/plain")

    async def table(request: web.Request) -> web.Response:
        # ?index=N&wait=S: once the table answered from is at index N or more (S seconds at
        # most, 60 at the very most), as a blocking read on the server would.
        try:
            at_least = int(request.query.get("index", "0"))
            wait_s = max(0.0, min(float(request.query.get("wait", "0").removesuffix("s")), 60.0))
        except ValueError:
            return web.json_response({"Error": "index: an integer, wait: seconds"}, status=400)
        index = await proxy.served_index(at_least, wait_s)
        return web.json_response({"Index": index}, headers={"X-Consul-Index": str(index)})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/table", table)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        await proxy.stop()
        raise BindError(f"cannot serve metrics on {addr}: {exc.strerror}") from exc
    return runner


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    import contextlib

    with contextlib.suppress(ImportError):
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None
