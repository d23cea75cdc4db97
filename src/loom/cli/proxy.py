"""``loom proxy status|config`` (``istioctl proxy-status|proxy-config``), ``loom wait``.

Both read the server: ``GET /v1/status/leader`` says it answers, ``GET /v1/loom/proxies``
(operator:read) lists the live xDS streams with, per resource type, the nonce last sent, the one
last ACKed and Envoy's last NACK message, and ``Synced`` (registered, served what the mesh says
now, every response ACKed). ``loom wait proxy ID`` returns once ID is synced and its own health
checks pass (``GET /v1/agent/health/service/id/ID``: a sidecar is other proxies' endpoint only
then), so a script can go on after ``loom dataplane ... &`` or after an intention change knowing
that Envoy has taken the configuration and peers can reach it. Waiting asks again every
``POLL_S``: the CLI has no stream to block on, and a tenth of a second is what a person waiting
does not notice.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from loom.cli.api import _addr, _client
from loom.cli.flags import add_format_flag, emit
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.cli import Commands

POLL_S = 0.1
"""How often ``loom wait`` asks again."""

TYPES = ("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration")
"""The columns of ``proxy status``, in Envoy's order of application."""

_SHORT = {"Cluster": "CDS", "ClusterLoadAssignment": "EDS", "Listener": "LDS",
          "RouteConfiguration": "RDS"}  # fmt: skip


class WaitTimeout(LoomError):
    """What was waited for did not happen in time."""


def _state(kind: dict[str, str] | None) -> str:
    if not kind:
        return "-"
    if kind.get("Nack"):
        return "NACKED"
    return "SYNCED" if kind.get("Acked") == kind.get("Sent") else "SENT"


def format_status(proxies: list[dict[str, Any]]) -> str:
    """One row per stream; each type SYNCED (ACKed), SENT (not yet), NACKED, or - (none);
    NACK messages under the table, as Envoy wrote them."""
    rows = [("PROXY", "SERVICE", "DC", "XDS", *(_SHORT[t] for t in TYPES), "STATUS")]
    nacks = []
    for p in proxies:
        types = p.get("Types", {})
        status = "synced" if p["Synced"] else ("unregistered" if not p["Registered"] else "stale")
        rows.append((
            p["ID"], p["Service"] or "-", p["Datacenter"] or "-", p["Protocol"],
            *(_state(types.get(t)) for t in TYPES), status,
        ))  # fmt: skip
        nacks += [f"{p['ID']} {_SHORT.get(t, t)} NACK: {v['Nack']}\n"
                  for t, v in sorted(types.items()) if v.get("Nack")]  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip() + "\n"
             for r in rows]  # fmt: skip
    return "".join(lines + nacks)


def _status(args: argparse.Namespace) -> int:
    emit(args, _client(args).get("/v1/loom/proxies"), format_status)
    return 0


def _config(args: argparse.Namespace) -> int:
    from loom.cli.proxyconfig import format_config

    emit(args, _client(args).get(f"/v1/loom/proxies/{args.id}/config"), format_config)
    return 0


def _deadline(args: argparse.Namespace) -> float:
    return time.monotonic() + float(args.timeout)


def _wait_server(args: argparse.Namespace) -> int:
    from loom.api import ClientError

    client = _client(args)
    until = _deadline(args)
    last = ""
    while True:
        try:
            if client.get("/v1/status/leader"):
                print(f"server {client.addr} is ready")
                return 0
            last = "no leader yet"
        except ClientError as exc:
            last = str(exc)
        if time.monotonic() >= until:
            raise WaitTimeout(f"the server is not ready after {args.timeout:g} s: {last}")
        time.sleep(POLL_S)


def _wait_proxy(args: argparse.Namespace) -> int:
    from loom.api import ClientError

    client = _client(args)
    until = _deadline(args)
    why = ""
    while True:
        try:
            mine = [p for p in client.get("/v1/loom/proxies") if p["ID"] == args.id]
        except ClientError as exc:
            mine, why = [], str(exc)
        else:
            why = _why_not(args.id, mine)
        if any(p["Synced"] for p in mine):
            unhealthy = _unhealthy(client, args.id)
            if not unhealthy:
                print(f"proxy {args.id} is synced")
                return 0
            why = unhealthy
        if time.monotonic() >= until:
            raise WaitTimeout(f"proxy {args.id} is not synced after {args.timeout:g} s: {why}")
        time.sleep(POLL_S)


def _unhealthy(client: Any, proxy_id: str) -> str:
    """Why the proxy's own health checks keep it out of other proxies' endpoints ("" when
    they pass, or when it is no agent service): "Connect Sidecar Listening" passes once its
    Envoy has every listener, and only then do peers get it as an endpoint."""
    from loom.api import HTTPStatusError, NotFoundError

    try:
        client.get(f"/v1/agent/health/service/id/{proxy_id}")
    except NotFoundError:
        return ""
    except HTTPStatusError as exc:
        if exc.status in (429, 503):
            return f"its health checks are not passing ({exc})"
        raise
    return ""


def _why_not(proxy_id: str, mine: list[dict[str, Any]]) -> str:
    if not mine:
        return f"no xDS stream from it (is `loom dataplane --proxy-id {proxy_id}` running?)"
    p = mine[-1]
    if not p["Registered"]:
        return "it is connected but not registered"
    nacks = [f"{t} NACK: {v['Nack']}" for t, v in sorted(p["Types"].items()) if v.get("Nack")]
    return "; ".join(nacks) or "Envoy has not acknowledged its latest configuration"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def register(commands: Commands) -> None:
    proxy = commands.group("proxy", "what the server sends each connected proxy")
    text = "list connected proxies: xDS sent, ACKed or NACKed per type, synced or not"
    p = proxy.add_parser("status", help=text, description=text + " (like istioctl proxy-status)")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_status)
    text = "print what the server sends proxy ID: listeners, RBAC, clusters, endpoints"
    p = proxy.add_parser("config", help=text, description=text + " (-format=json: Envoy's "
                         "JSON of every resource, whole)")  # fmt: skip
    p.add_argument("id", metavar="ID", help="the proxy's service ID (web-sidecar-proxy)")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_config)

    wait = commands.group("wait", "wait for the server or a proxy to be ready (for scripts)")
    text = "wait until the server answers its HTTP API"
    p = wait.add_parser("server", help=text, description=text)
    p.add_argument(
        "--timeout", type=_seconds, default=30.0, metavar="SECONDS", help="give up (exit 1) "
        "after SECONDS (default 30)",
    )  # fmt: skip
    _addr(p)
    p.set_defaults(func=_wait_server)
    text = ("wait until proxy ID is connected, registered and has ACKed the configuration "
            "the mesh says it should have now")  # fmt: skip
    p = wait.add_parser("proxy", help=text, description=text + " (after loom dataplane, or a "
                        "change such as an intention)")  # fmt: skip
    p.add_argument("id", metavar="ID", help="the proxy's service ID (web-sidecar-proxy)")
    p.add_argument(
        "--timeout", type=_seconds, default=60.0, metavar="SECONDS", help="give up (exit 1) "
        "after SECONDS (default 60)",
    )  # fmt: skip
    _addr(p)
    p.set_defaults(func=_wait_proxy)
