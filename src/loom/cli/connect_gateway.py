"""``loom connect envoy -gateway=mesh [-register]``: Consul's way of running a mesh gateway.

Consul's ``consul connect envoy -gateway=mesh -register -service NAME -address LAN -wan-address
WAN`` registers a ``mesh-gateway`` service on the local agent and runs its Envoy; this is the
same over ``loom dataplane``. The registration is Consul's: ``lan``/``wan`` tagged addresses,
a TCP check ``mesh-gateway listening`` on the LAN address every 10 s (deregistered after
``-deregister-critical-service-after`` critical, 6 h), and, when both addresses are local
interfaces of this host, Proxy.Config asking the gateway to listen on both tagged addresses
instead of the default one (Consul's ``envoy_gateway_bind_tagged_addresses``). Registering
again is a no-op in effect (the same body replaces the same ID). On exit the registration
is kept, as Consul keeps it: the check's deregistration timer removes a gateway that is gone
for good, and a restart finds it registered.

The body is built by pure functions (``gateway_registration``), apart from the one probe of
the host (``bindable``) and the HTTP calls.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
from pathlib import Path
from typing import Any

from loom.cli.errors import UsageError
from loom.errors import LoomError

DEFAULT_PORT = 8443
"""Consul's mesh gateway port when ``-address`` names none."""
KIND = "mesh-gateway"
CHECK_INTERVAL = "10s"


def add_gateway_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gateway",
        choices=("mesh",),
        help="run a gateway of this kind (mesh: a mesh gateway) with Envoy instead of "
        "printing a sidecar's bootstrap (default: none)",
    )
    p.add_argument(
        "--register",
        action="store_true",
        help="register the gateway on the server's node first (idempotent; kept on exit, as "
        "Consul keeps it) (default: off: it must be registered already)",
    )
    p.add_argument(
        "--service",
        metavar="NAME",
        help=f"the gateway's service name (default {KIND}); also its proxy ID unless "
        "--proxy-id is given",
    )
    p.add_argument(
        "--address",
        metavar="[HOST]:PORT",
        help="LAN address of the gateway, registered as its address and `lan` tagged address "
        f"(default: the node's address, port {DEFAULT_PORT})",
    )
    p.add_argument(
        "--wan-address",
        metavar="[HOST]:PORT",
        help="WAN address other datacenters dial, registered as its `wan` tagged address "
        "(default: none, so the LAN address)",
    )
    p.add_argument(
        "--bind-address",
        action="append",
        default=[],
        metavar="NAME=ADDR:PORT",
        help="listen on this address instead of the registered ones (repeatable; Consul's "
        "-bind-address, as envoy_gateway_bind_addresses) (default: none)",
    )
    p.add_argument(
        "--deregister-critical-service-after",
        default="6h",
        metavar="DURATION",
        help="the check's DeregisterCriticalServiceAfter: a gateway critical this long is "
        "deregistered (default 6h, Consul's)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="the gateway's bootstrap, Envoy logs and admin address (default: a temp dir)",
    )


def split_address(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``HOST`` -> (host, port); port 0 if none."""
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"{flag}: {text!r} is not [HOST]:PORT")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UsageError(f"{flag}: {text!r} is not [HOST]:PORT")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise UsageError(f"{flag}: {text!r} has no valid port")
    return host, int(port) if port else 0


def bindable(host: str) -> bool:
    """Whether ``host`` is an IP address of this host (Consul's ``canBind``): a probe bind."""
    import socket

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return True
    return False


def gateway_registration(
    service: str,
    proxy_id: str,
    lan: tuple[str, int],
    wan: tuple[str, int] | None,
    deregister_after: str,
    bind_tagged: bool,
    bind: dict[str, tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """The agent registration of a mesh gateway, as Consul's ``-register`` writes it.

    ``lan``/``wan``: (host, port), host empty for the node's address; ``bind_tagged``: both
    are addresses of this host, so the gateway listens on each (not on the default);
    ``bind``: named addresses to listen on instead of all of those (``--bind-address``)."""
    lan_host, lan_port = lan[0], lan[1] or DEFAULT_PORT
    tagged: dict[str, Any] = {}
    if lan_host:
        tagged["lan"] = {"Address": lan_host, "Port": lan_port}
    if wan is not None and wan[0]:
        tagged["wan"] = {"Address": wan[0], "Port": wan[1] or lan_port}
    check_host = lan_host or "127.0.0.1"
    check_addr = f"[{check_host}]" if ":" in check_host else check_host
    body: dict[str, Any] = {
        "Kind": KIND,
        "Name": service,
        "ID": proxy_id,
        "Address": lan_host,
        "Port": lan_port,
        "TaggedAddresses": tagged,
        "Check": {
            "Name": f"{KIND} listening",
            "TCP": f"{check_addr}:{lan_port}",
            "Interval": CHECK_INTERVAL,
            "DeregisterCriticalServiceAfter": deregister_after,
        },
    }
    if bind:
        named = {n: {"Address": h, "Port": port} for n, (h, port) in sorted(bind.items())}
        body["Proxy"] = {
            "Config": {
                "envoy_gateway_no_default_bind": True,
                "envoy_gateway_bind_addresses": named,
            }
        }
    elif bind_tagged:
        body["Proxy"] = {
            "Config": {
                "envoy_gateway_no_default_bind": True,
                "envoy_gateway_bind_tagged_addresses": True,
            }
        }
    return body


def registration_of(args: argparse.Namespace, proxy_id: str) -> dict[str, Any]:
    """The registration body the flags ask for (probing which addresses are local)."""
    service = args.service or KIND
    lan = split_address(args.address or "", "--address")
    wan = split_address(args.wan_address, "--wan-address") if args.wan_address else None
    bind: dict[str, tuple[str, int]] = {}
    for text in args.bind_address:
        name, sep, addr = text.partition("=")
        host, port = split_address(addr, "--bind-address")
        if not sep or not name or not host or not port:
            raise UsageError(f"--bind-address: {text!r} is not NAME=ADDR:PORT")
        bind[name] = (host, port)
    if bind:
        return gateway_registration(
            service, proxy_id, lan, wan, args.deregister_critical_service_after, False, bind
        )
    if lan[0] and not bindable(lan[0]):
        raise UsageError(
            f"the LAN address {lan[0]!r} is not an address of this host, so the gateway "
            "cannot listen on it; give a local --address"
        )
    both = bool(lan[0]) and wan is not None and bindable(lan[0]) and bindable(wan[0])
    return gateway_registration(
        service, proxy_id, lan, wan, args.deregister_critical_service_after, both
    )


def gateway_proxy_id(args: argparse.Namespace) -> str:
    """``--proxy-id``, else the service name with ``--register``, else the one mesh gateway
    registered on the server's node (Consul's lookup)."""
    if args.proxy_id:
        return str(args.proxy_id)
    if args.register:
        return str(args.service or KIND)
    from loom.cli.api import _client

    services = _client(args).get("/v1/agent/services")
    found = sorted(
        sid
        for sid, svc in services.items()
        if isinstance(svc, dict)
        and svc.get("Kind") == KIND
        and (not args.service or svc.get("Service") == args.service)
    )
    if len(found) != 1:
        which = "no mesh gateway is" if not found else f"{len(found)} mesh gateways are"
        raise LoomError(f"{which} registered on the server's node; give --proxy-id or --register")
    return str(found[0])


def run_gateway(args: argparse.Namespace) -> int:
    """Register (with ``--register``), then run the gateway's dataplane (or print its
    bootstrap with ``--bootstrap``)."""
    if args.proxy_id_file:
        raise UsageError("--gateway takes --proxy-id or --register, not --proxy-id-file")
    if getattr(args, "sidecar_for", None):
        raise UsageError("--gateway and --sidecar-for do not go together")
    proxy_id = gateway_proxy_id(args)
    if args.register:
        from loom.cli.api import _client

        body = registration_of(args, proxy_id)
        _client(args).put("/v1/agent/service/register", body)
        print(f"Registered service: {body['Name']}", flush=True)
    args.proxy_id = proxy_id
    from loom.cli import dataplane

    if args.bootstrap:
        return dataplane.print_bootstrap(args, None)
    return dataplane.run_from_args(args)
