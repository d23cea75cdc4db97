"""CLI over the HTTP API: services, catalog, intentions, config entries.

Formatting is kept in pure functions (``format_*``) apart from printing, so the output is
golden-tested without a server.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom import defaults
from loom.cli.documents import read_document, service_definitions
from loom.cli.errors import UsageError
from loom.cli.flags import add_format_flag, emit
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.api.client import Client as SyncClient
    from loom.api.transport import TlsSettings
    from loom.cli import Commands


def _client(args: argparse.Namespace) -> SyncClient:
    """The API client, imported on first use so that ``loom --help`` does not load it."""
    from loom.api.asyncclient import token_from
    from loom.api.client import Client as SyncClient

    return SyncClient(
        args.http_addr, token=token_from(args.token, args.token_file) or "", tls=tls_of(args)
    )


def tls_of(args: argparse.Namespace) -> TlsSettings:
    """The client's TLS from ``add_tls_flags``'s flags, else the environment."""
    from loom.api.asyncclient import tls_from

    return tls_from(args.ca_file, args.client_cert, args.client_key, args.tls_server_name)


def add_tls_flags(p: argparse.ArgumentParser) -> None:
    """``--ca-file`` and friends (Consul's CLI names), for every command that takes
    ``--http-addr``: an ``https://`` address (or ``CONSUL_HTTP_SSL=true``) speaks TLS."""
    p.add_argument(
        "--ca-file",
        metavar="PATH",
        help="PEM CA file to verify the server's certificate over https "
        "(default $LOOM_CACERT or $CONSUL_CACERT, else the system's CAs)",
    )
    p.add_argument(
        "--client-cert",
        metavar="PATH",
        help="PEM client certificate, for a server with --tls-verify-incoming "
        "(default $LOOM_CLIENT_CERT or $CONSUL_CLIENT_CERT)",
    )
    p.add_argument(
        "--client-key",
        metavar="PATH",
        help="PEM key of --client-cert (default $LOOM_CLIENT_KEY or $CONSUL_CLIENT_KEY)",
    )
    p.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name to verify in the server's certificate (default: the address's host; "
        "$CONSUL_TLS_SERVER_NAME)",
    )



def _addr(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--http-addr",
        metavar="ADDR",
        help="server HTTP API, HOST:PORT, https://HOST:PORT (TLS) or unix:PATH "
        f"(default $LOOM_HTTP_ADDR, $CONSUL_HTTP_ADDR or {defaults.HTTP_ADDR})",
    )
    add_tls_flags(p)
    add_token_flags(p)


def add_token_flags(p: argparse.ArgumentParser, use: str = "") -> None:
    """``--token`` and ``--token-file`` (Consul's CLI names and variables); ``use`` says
    what the token is for, in the help."""
    p.add_argument(
        "--token",
        metavar="SECRET",
        help=f"ACL token{use} (default $LOOM_HTTP_TOKEN or $CONSUL_HTTP_TOKEN)",
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the ACL token (default $LOOM_HTTP_TOKEN_FILE or "
        "$CONSUL_HTTP_TOKEN_FILE)",
    )


def format_services(services: dict[str, list[str]]) -> str:
    """Names and their tags, the tags in one aligned column (``consul catalog services
    -tags``)."""
    width = max((len(name) for name in services), default=0)
    return "".join(
        f"{name:<{width}}  {','.join(tags)}".rstrip() + "\n"
        for name, tags in sorted(services.items())
    )


def format_entry(entry: dict[str, Any]) -> str:
    """A config entry as ``Key: value`` lines, nested values as compact JSON."""
    width = max((len(k) for k in entry), default=0) + 1
    return "".join(
        f"{k + ':':<{width}}  {_scalar(v)}".rstrip() + "\n" for k, v in sorted(entry.items())
    )


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def format_entry_names(entries: list[dict[str, Any]]) -> str:
    return "".join(f"{e['Name']}\n" for e in entries)


def _meta(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(f"-meta {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def definition_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The service definition ``services register -name ... -port ...`` describes."""
    d: dict[str, Any] = {"Name": args.name}
    if args.id:
        d["ID"] = args.id
    if args.address:
        d["Address"] = args.address
    if args.port is not None:
        d["Port"] = args.port
    if args.tags:
        d["Tags"] = [t for tag in args.tags for t in tag.split(",") if t]
    if args.meta:
        d["Meta"] = _meta(args.meta)
    return d


def _field(d: dict[str, Any], key: str) -> Any:
    return next((v for k, v in d.items() if k.lower() == key.lower()), None)


def _services_register(args: argparse.Namespace) -> int:
    by_flags = any(
        (args.name, args.id, args.address, args.port is not None, args.tags, args.meta)
    )
    if by_flags == bool(args.file):
        raise UsageError(
            "services register: give a definition FILE, or -name (with -id -port -tags "
            "-address -meta), not both"
        )
    if args.file:
        defs = service_definitions(read_document(args.file), args.file)
    else:
        if not args.name:
            raise UsageError("services register: -name is required without a FILE")
        defs = [definition_from_flags(args)]
    client = _client(args)
    for d in defs:
        client.put("/v1/agent/service/register", d)
        print(f"Registered service: {_field(d, 'Name') or _field(d, 'Service') or '?'}")
    return 0


def _services_deregister(args: argparse.Namespace) -> int:
    if bool(args.id) == bool(args.target):
        raise UsageError("services deregister: give a service ID (or -id ID) or a FILE")
    ids = [args.id] if args.id else [args.target]
    if args.target and (Path(args.target).is_file() or args.target == "-"):
        defs = service_definitions(read_document(args.target), args.target)
        ids = [str(_field(d, "ID") or _field(d, "Name") or _field(d, "Service")) for d in defs]
    client = _client(args)
    for sid in ids:
        client.put(f"/v1/agent/service/deregister/{sid}")
        print(f"Deregistered service: {sid}")
    return 0


def _catalog_services(args: argparse.Namespace) -> int:
    emit(args, _client(args).get("/v1/catalog/services"), format_services)
    return 0


def _config_write(args: argparse.Namespace) -> int:
    doc = read_document(args.file)
    ok = _client(args).put("/v1/config", doc)
    if ok is not True:
        raise LoomError("config write: the server did not apply the entry (check-and-set failed)")
    kind = doc.get("Kind", "?") if isinstance(doc, dict) else "?"
    name = doc.get("Name", "?") if isinstance(doc, dict) else "?"
    print(f"Config entry written: {kind}/{name}")
    return 0


def _config_read(args: argparse.Namespace) -> int:
    emit(args, _client(args).get(f"/v1/config/{args.kind}/{args.name}"), format_entry)
    return 0


def _config_list(args: argparse.Namespace) -> int:
    emit(args, _client(args).get(f"/v1/config/{args.kind}"), format_entry_names)
    return 0


def _config_delete(args: argparse.Namespace) -> int:
    _client(args).delete(f"/v1/config/{args.kind}/{args.name}")
    print(f"Config entry deleted: {args.kind}/{args.name}")
    return 0


_KIND = (
    "config entry kind: service-defaults, proxy-defaults, service-intentions, service-resolver, "
    "mesh, ..."
)


def register(commands: Commands) -> None:
    from loom.cli import intentions

    svc = commands.group("services", "register and deregister services")
    p = svc.add_parser(
        "register",
        help="register services from a definition file (JSON, YAML or HCL) or from flags",
        description="Register the services of a Consul service definition file "
        '({"service": {...}}, {"services": [...]} or a bare definition; JSON, YAML or HCL), '
        "or the one service -name, -port... describe. Unknown keys are refused.",
    )
    p.add_argument("file", nargs="?", help="service definition file, or - for stdin")
    p.add_argument("--name", help="service name (without FILE)")
    p.add_argument("--id", help="service ID (default: the name)")
    p.add_argument("--address", help="service address (default: the node's)")
    p.add_argument("--port", type=int, help="service port (default 0)")
    p.add_argument(
        "--tags", action="append", metavar="TAG[,TAG]", help="tags, comma-separated (repeatable)"
    )
    p.add_argument(
        "--meta", action="append", metavar="KEY=VALUE", help="a metadata pair (repeatable)"
    )
    _addr(p)
    p.set_defaults(func=_services_register)
    p = svc.add_parser(
        "deregister",
        help="deregister a service by ID, or those of a definition file",
        description="Deregister a service by ID (positional or -id), or every service of a "
        "definition file (their ID, else their name), as Consul's CLI accepts.",
    )
    p.add_argument("target", nargs="?", metavar="ID|FILE", help="service ID or definition file")
    p.add_argument("--id", help="service ID")
    _addr(p)
    p.set_defaults(func=_services_deregister)

    cat = commands.group("catalog", "read the catalog")
    p = cat.add_parser("services", help="list services and their tags")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_catalog_services)

    intentions.register(commands)

    cfg = commands.group("config", "manage config entries")
    p = cfg.add_parser("write", help="write a config entry from a file (JSON, YAML or HCL)")
    p.add_argument("file", help="config entry file, or - for stdin")
    _addr(p)
    p.set_defaults(func=_config_write)
    for name, func, text in (
        ("read", _config_read, "print a config entry"),
        ("delete", _config_delete, "delete a config entry"),
    ):
        p = cfg.add_parser(name, help=text, description=text)
        p.add_argument("--kind", required=True, help=_KIND)
        p.add_argument("--name", required=True, help="config entry name")
        if name == "read":
            add_format_flag(p, default="json")
        _addr(p)
        p.set_defaults(func=func)
    text = "list config entries of a kind"
    p = cfg.add_parser("list", help=text, description=text)
    p.add_argument("--kind", required=True, help=_KIND)
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_config_list)
