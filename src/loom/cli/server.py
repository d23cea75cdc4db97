"""``loom server``: runs the control plane."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from loom import defaults
from loom.cli.errors import UsageError

if TYPE_CHECKING:
    from loom.cli import Commands


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _seconds_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _octal_mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0660") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a mode between 0000 and 0777")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _group(text: str) -> int:
    if text.isascii() and text.isdigit():
        return int(text)
    import grp

    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no group named {text!r}") from None


def check_datacenter(name: str, flag: str) -> str:
    from loom.domain.fields import ValidationError, check_name

    try:
        return check_name(name, flag)
    except ValidationError as exc:
        raise UsageError(f"server: {exc}") from None


def _join_addr(text: str) -> str:
    from loom.domain.federation import check_server
    from loom.domain.fields import ValidationError

    try:
        return check_server(text, "--join-wan/--advertise-addr-wan")
    except ValidationError as exc:
        raise UsageError(f"server: {exc}") from None


def _read_token(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"server: cannot read {path}: {exc.strerror or exc}") from None
    if not text:
        raise UsageError(f"server: --acl-replication-token-file {path} is empty")
    return text


def register(commands: Commands) -> None:
    p = commands.top.add_parser(
        "server",
        help="run the control plane (catalog, intentions, CA, HTTP API, xDS)",
        description=(
            "Run the Loom control plane: the catalog and health of services, intentions and "
            "config entries, the built-in CA, the Consul-compatible HTTP API and the xDS "
            "server for Envoy. Give --dev for an in-memory store or --data-dir for a durable one."
        ),
    )
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "--dev", action="store_true", help="in-memory store; nothing survives a restart"
    )
    store.add_argument("--data-dir", type=Path, help="directory of the durable SQLite store")
    store.add_argument(
        "--etcd-endpoints",
        metavar="HOST:PORT[,...]",
        help="store the state in etcd, shared by every server given the same endpoints and "
        "prefix (several endpoints must be IP addresses)",
    )
    p.add_argument(
        "--etcd-prefix", default="/loom/", help="key prefix of the state in etcd (default /loom/)"
    )
    p.add_argument(
        "--http-addr",
        action="append",
        metavar="ADDR",
        help="HTTP API listen address, HOST:PORT or unix:PATH; repeatable "
        f"(default {defaults.HTTP_ADDR}; port 0 picks a free port)",
    )
    p.add_argument(
        "--grpc-addr",
        action="append",
        metavar="ADDR",
        help="xDS gRPC listen address, HOST:PORT or unix:PATH; repeatable "
        f"(default {defaults.GRPC_ADDR})",
    )
    p.add_argument(
        "--no-http",
        action="store_true",
        help="no plain HTTP listener (only --https-addr): other datacenters reach this server "
        "at its first HTTPS address and it calls them over HTTPS only; the default is plain "
        f"HTTP on {defaults.HTTP_ADDR}",
    )
    p.add_argument(
        "--no-grpc",
        action="store_true",
        help="no plain gRPC listener (only --grpc-tls-addr); the default is plain gRPC on "
        f"{defaults.GRPC_ADDR}",
    )
    p.add_argument(
        "--https-addr",
        action="append",
        metavar="ADDR",
        help="HTTP API over TLS, HOST:PORT; repeatable (Consul's ports.https, "
        f"{defaults.HTTPS_PORT}; default: none)",
    )
    p.add_argument(
        "--grpc-tls-addr",
        action="append",
        metavar="ADDR",
        help="xDS gRPC over TLS, HOST:PORT; repeatable (Consul's ports.grpc_tls, "
        f"{defaults.GRPC_TLS_PORT}; default: none)",
    )
    p.add_argument(
        "--tls-cert-file",
        type=Path,
        metavar="PATH",
        help="PEM certificate of the TLS listeners (Consul's tls.defaults.cert_file); "
        "default: one issued at start by the built-in CA",
    )
    p.add_argument(
        "--tls-key-file",
        type=Path,
        metavar="PATH",
        help="PEM private key of --tls-cert-file (Consul's tls.defaults.key_file)",
    )
    p.add_argument(
        "--tls-ca-file",
        type=Path,
        metavar="PATH",
        help="PEM CAs that sign client certificates (with --tls-verify-incoming) and other "
        "datacenters' HTTPS servers (Consul's tls.defaults.ca_file; default: the built-in "
        "CA's roots, and the system's CAs with --tls-cert-file)",
    )
    p.add_argument(
        "--tls-verify-incoming",
        action="store_true",
        help="require a client certificate on HTTPS and TLS gRPC "
        "(Consul's tls.defaults.verify_incoming)",
    )
    p.add_argument(
        "--tls-san",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP address of the built-in server certificate; repeatable",
    )
    p.add_argument(
        "--unix-socket-mode",
        type=_octal_mode,
        default=0o660,
        metavar="MODE",
        help="mode of the unix sockets listened on (Consul's unix_sockets.mode; default 0660: "
        "the owner and the socket's group)",
    )
    p.add_argument(
        "--unix-socket-group",
        type=_group,
        metavar="GROUP",
        help="group (name or GID) of those sockets (Consul's unix_sockets.group; default: "
        "the server's)",
    )
    p.add_argument("--datacenter", default="dc1", help="datacenter name (default dc1)")
    p.add_argument(
        "--default-intention-policy",
        choices=("allow", "deny"),
        default=None,
        help="decision when no intention matches (default: the ACL default policy when ACLs "
        "are on, else allow, as Consul)",
    )
    p.add_argument(
        "--acl-default-policy",
        choices=("allow", "deny"),
        default=None,
        help="enable ACLs with this default policy (Consul's acl.default_policy); "
        "absent: ACLs are off and nothing is checked",
    )
    p.add_argument(
        "--acl-initial-management-token",
        metavar="SECRET",
        default="",
        help="SecretID (a UUID) of a management token created at start "
        "(Consul's acl.tokens.initial_management); needs --acl-default-policy",
    )
    p.add_argument(
        "--primary-datacenter",
        metavar="NAME",
        default="",
        help="the federation's primary datacenter, where config entries, intentions and ACLs "
        "are written and replicated from (Consul's primary_datacenter; default: this one)",
    )
    p.add_argument(
        "--join-wan",
        action="append",
        default=[],
        metavar="[https://]HOST:PORT",
        help="HTTP API address of a server in another datacenter to federate with, retried "
        "until reachable (Consul's retry_join_wan); https://HOST:PORT: over TLS, the server "
        "verified with --tls-ca-file; repeatable (default: none)",
    )
    p.add_argument(
        "--advertise-addr-wan",
        metavar="[https://]HOST:PORT",
        default="",
        help="address other datacenters reach this server's HTTP API at (Consul's "
        "advertise_addr_wan; default: the first non-unix --http-addr, else with --no-http "
        "the first --https-addr as https://HOST:PORT)",
    )
    replication = p.add_mutually_exclusive_group()
    replication.add_argument(
        "--acl-replication-token",
        metavar="SECRET",
        default="",
        help="token this server presents to other datacenters, for replication and "
        "forwarding (Consul's acl.tokens.replication; default: none, the anonymous token)",
    )
    replication.add_argument(
        "--acl-replication-token-file",
        type=Path,
        metavar="PATH",
        help="file holding that token (default: none)",
    )
    p.add_argument(
        "--acl-login-rate",
        metavar="N/s",
        default="10/s",
        help="login attempts (POST /v1/acl/login) a client address may make, sustained "
        "(N/s or N/m; 0: no limit; default 10/s); more get 429 and Retry-After",
    )
    p.add_argument(
        "--acl-login-burst",
        type=int,
        metavar="N",
        default=20,
        help="login attempts a client address may make at once (default 20)",
    )
    p.add_argument(
        "--ca-sign-workers",
        type=int,
        metavar="N",
        default=None,
        help="worker processes that check CSRs' signatures and sign their leaves (they get "
        "the CA key over a pipe); 0: sign in-process (default: 0 on one CPU, 1 on two or "
        "three, else half the CPUs, at most 4)",
    )
    p.add_argument(
        "--node-name",
        default="loom-server",
        help="node of agent-API registrations (default loom-server)",
    )
    p.add_argument(
        "--node-address", default="127.0.0.1", help="address of that node (default 127.0.0.1)"
    )
    p.add_argument(
        "--http-max-conns-per-client",
        type=_non_negative_int,
        default=200,
        metavar="N",
        help="open HTTP connections allowed per client IP (Consul's http_max_conns_per_client); "
        "over it a new connection gets 429 and is closed; 0: no limit (default 200)",
    )
    p.add_argument(
        "--http-idle-timeout",
        type=_positive_seconds,
        default=75.0,
        metavar="SECONDS",
        help="close an HTTP connection idle (no request in progress) for this long (default 75)",
    )
    p.add_argument(
        "--kv-tombstone-ttl",
        type=_positive_seconds,
        default=900.0,
        metavar="SECONDS",
        help="keep a deleted KV key's tombstone this long, as Consul's tombstone_ttl "
        "(default 900)",
    )
    p.add_argument(
        "--dataplane-deadline",
        type=_seconds_or_zero,
        default=15.0,
        metavar="SECONDS",
        help="a dataplane that sends no heartbeat for this long is gone: the checks it runs "
        "turn critical, saying so, until it reports again; dataplanes beat every third of it, "
        "and after a start every dataplane has this long to report first (default 15; 0: off)",
    )
    p.add_argument(
        "--enable-script-checks",
        action="store_true",
        help="accept and run script checks (Args), as Consul's enable_script_checks; off: "
        "whoever may register a check could run commands as the server",
    )
    ui = p.add_mutually_exclusive_group()
    ui.add_argument(
        "--ui",
        type=_boolean,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="serve the web UI at /ui/ and redirect / there (default true; --ui=false: off)",
    )
    ui.add_argument(
        "--no-ui", dest="ui", action="store_false", help="do not serve the web UI (default: served)"
    )
    p.add_argument(
        "--ui-metrics-provider",
        choices=("prometheus",),
        help="where the UI's request rate, error rate and p99 come from (Consul's "
        "ui_config.metrics_provider); needs --ui-metrics-url",
    )
    p.add_argument(
        "--ui-metrics-url",
        metavar="URL",
        help="that provider's base URL (http://127.0.0.1:9090), queried by the server only, "
        "never by the browser (Consul's ui_config.metrics_proxy.base_url)",
    )
    p.add_argument("--leaf-ttl", type=float, default=72 * 3600.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="the server's log level (default info)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from loom.aio import run as run_main
    from loom.ca.servertls import ServerTls
    from loom.control.loginlimit import LoginRate
    from loom.control.signpool import default_workers
    from loom.control.state import ServerSettings
    from loom.server.app import print_ready, serve

    if not args.dev and args.data_dir is None and not args.etcd_endpoints:
        raise UsageError(
            "server: give --dev (in-memory store), --data-dir DIR (durable store) "
            "or --etcd-endpoints HOST:PORT[,...] (store shared by several servers)"
        )
    if args.acl_initial_management_token and args.acl_default_policy is None:
        raise UsageError("server: --acl-initial-management-token needs --acl-default-policy")
    try:
        login_rate = LoginRate.parse(args.acl_login_rate, args.acl_login_burst)
    except ValueError as exc:
        raise UsageError(f"server: --acl-login-rate/--acl-login-burst: {exc}") from None
    if args.ca_sign_workers is not None and not 0 <= args.ca_sign_workers <= 64:
        raise UsageError("server: --ca-sign-workers must be between 0 and 64")
    if args.acl_initial_management_token:
        import uuid

        try:
            uuid.UUID(args.acl_initial_management_token)
        except ValueError:
            raise UsageError("server: --acl-initial-management-token must be a UUID") from None
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        raise UsageError("server: --tls-cert-file and --tls-key-file are given together")
    if args.no_http and args.http_addr:
        raise UsageError("server: --no-http and --http-addr exclude each other")
    tls_on = bool(args.https_addr or args.grpc_tls_addr)
    # --tls-ca-file alone also verifies other datacenters' HTTPS servers.
    given = args.tls_cert_file or args.tls_verify_incoming or args.tls_san
    if given and not tls_on:
        raise UsageError("server: the --tls-* flags need --https-addr or --grpc-tls-addr")
    if args.tls_san and args.tls_cert_file is not None:
        raise UsageError("server: --tls-san is for the built-in certificate, not --tls-cert-file")
    if bool(args.ui_metrics_provider) != bool(args.ui_metrics_url):
        raise UsageError("server: --ui-metrics-provider and --ui-metrics-url are given together")
    if args.ui_metrics_url and not args.ui_metrics_url.startswith(("http://", "https://")):
        raise UsageError("server: --ui-metrics-url must be an http:// or https:// URL")
    if args.no_grpc and args.grpc_addr:
        raise UsageError("server: --no-grpc and --grpc-addr exclude each other")
    if args.no_grpc and not args.grpc_tls_addr:
        raise UsageError("server: --no-grpc needs --grpc-tls-addr (else no proxy gets xDS)")
    if args.no_http and not args.https_addr:
        raise UsageError("server: --no-http needs --https-addr (else there is no API at all)")
    join_wan = tuple(_join_addr(a) for a in args.join_wan)
    advertise_wan = _join_addr(args.advertise_addr_wan) if args.advertise_addr_wan else ""
    plain = [a for a in (*join_wan, advertise_wan) if a and not a.startswith("https://")]
    if args.no_http and plain:
        raise UsageError(
            f"server: --no-http: {plain[0]} is plain HTTP, and this server neither serves nor "
            f"sends plain HTTP; give https://{plain[0]}"
        )
    if args.primary_datacenter:
        check_datacenter(args.primary_datacenter, "--primary-datacenter")
    replication_token = args.acl_replication_token
    if args.acl_replication_token_file is not None:
        replication_token = _read_token(args.acl_replication_token_file)
    intentions = args.default_intention_policy or args.acl_default_policy or "allow"
    endpoints = tuple(e for e in (args.etcd_endpoints or "").split(",") if e.strip())
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    settings = ServerSettings(
        http_addrs=() if args.no_http else tuple(args.http_addr or [defaults.HTTP_ADDR]),
        https_addrs=tuple(args.https_addr or ()),
        grpc_tls_addrs=tuple(args.grpc_tls_addr or ()),
        tls=ServerTls(
            cert_file=args.tls_cert_file,
            key_file=args.tls_key_file,
            ca_file=args.tls_ca_file,
            verify_incoming=args.tls_verify_incoming,
            extra_sans=tuple(args.tls_san),
        ),
        unix_socket_mode=args.unix_socket_mode,
        unix_socket_group=args.unix_socket_group,
        grpc_addrs=() if args.no_grpc else tuple(args.grpc_addr or [defaults.GRPC_ADDR]),
        data_dir=args.data_dir,
        etcd_endpoints=endpoints,
        etcd_prefix=args.etcd_prefix,
        datacenter=args.datacenter,
        node=args.node_name,
        node_address=args.node_address,
        default_allow=intentions == "allow",
        leaf_ttl_s=args.leaf_ttl,
        acl_default_policy=args.acl_default_policy,
        acl_initial_management_token=args.acl_initial_management_token,
        primary_datacenter=args.primary_datacenter,
        join_wan=join_wan,
        advertise_addr_wan=advertise_wan,
        replication_token=replication_token,
        acl_login_rate=login_rate,
        ca_sign_workers=(
            default_workers() if args.ca_sign_workers is None else args.ca_sign_workers
        ),
        http_max_conns_per_client=args.http_max_conns_per_client,
        http_idle_timeout_s=args.http_idle_timeout,
        enable_script_checks=args.enable_script_checks,
        dataplane_deadline_s=args.dataplane_deadline,
        kv_tombstone_ttl_s=args.kv_tombstone_ttl,
        ui=args.ui,
        ui_metrics_provider=args.ui_metrics_provider,
        ui_metrics_url=args.ui_metrics_url,
    )
    run_main(serve(settings, print_ready(settings)))
    return 0
