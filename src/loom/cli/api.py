"""CLI over the HTTP API: services, catalog, intentions, config entries.

Formatting is kept in pure functions (``format_*``) apart from printing, so the output is
golden-tested without a server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom import defaults
from loom.cli.errors import InputError
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


def read_document(path: str) -> Any:
    """JSON or YAML from a file, or from stdin when path is '-'."""
    import yaml  # here, not at the top: every command's parser imports this module

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: neither JSON nor YAML ({str(exc).splitlines()[0]})") from exc


def service_definitions(doc: Any, path: str) -> list[Any]:
    """Consul service definition files: {"service": {...}}, {"services": [...]} or bare."""
    if isinstance(doc, dict) and "service" in doc:
        return [doc["service"]]
    if isinstance(doc, dict) and "services" in doc and isinstance(doc["services"], list):
        return list(doc["services"])
    if isinstance(doc, dict):
        return [doc]
    raise InputError(f"{path}: expected a service definition object")


def format_services(services: dict[str, list[str]]) -> str:
    lines = []
    for name, tags in sorted(services.items()):
        lines.append(f"{name}  {','.join(tags)}".rstrip())
    return "\n".join(lines) + ("\n" if lines else "")


def format_intentions(intentions: list[dict[str, Any]]) -> str:
    rows = [("SOURCE", "DESTINATION", "ACTION", "PRECEDENCE")]
    for i in intentions:
        src = (
            f"{i['SourceNS']}/{i['SourceName']}" if i["SourceNS"] != "default" else i["SourceName"]
        )
        dst = i["DestinationName"]
        if i["DestinationNS"] != "default":
            dst = f"{i['DestinationNS']}/{dst}"
        rows.append((src, dst, i["Action"] or "L7", str(i["Precedence"])))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}\n" for r in rows
    )


def _services_register(args: argparse.Namespace) -> int:
    client = _client(args)
    defs = service_definitions(read_document(args.file), args.file)
    for d in defs:
        client.put("/v1/agent/service/register", d)
        name = d.get("Name") or d.get("name") if isinstance(d, dict) else "?"
        print(f"Registered service: {name}")
    return 0


def _services_deregister(args: argparse.Namespace) -> int:
    _client(args).put(f"/v1/agent/service/deregister/{args.id}")
    print(f"Deregistered service: {args.id}")
    return 0


def _catalog_services(args: argparse.Namespace) -> int:
    sys.stdout.write(format_services(_client(args).get("/v1/catalog/services")))
    return 0


def _intention_create(args: argparse.Namespace) -> int:
    action = "deny" if args.deny else "allow"
    _client(args).put(
        "/v1/connect/intentions/exact",
        {"Action": action, "Description": args.description or ""},
        source=args.source,
        destination=args.destination,
    )
    print(f"Created: {args.source} => {args.destination} ({action})")
    return 0


def _intention_delete(args: argparse.Namespace) -> int:
    _client(args).delete(
        "/v1/connect/intentions/exact", source=args.source, destination=args.destination
    )
    print(f"Intention deleted: {args.source} => {args.destination}")
    return 0


def _intention_check(args: argparse.Namespace) -> int:
    result = _client(args).get(
        "/v1/connect/intentions/check", source=args.source, destination=args.destination
    )
    print("Allowed" if result["Allowed"] else "Denied")
    return 0 if result["Allowed"] else 2


def _intention_list(args: argparse.Namespace) -> int:
    sys.stdout.write(format_intentions(_client(args).get("/v1/connect/intentions")))
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
    entry = _client(args).get(f"/v1/config/{args.kind}/{args.name}")
    print(json.dumps(entry, indent=2, sort_keys=True))
    return 0


def _config_list(args: argparse.Namespace) -> int:
    for entry in _client(args).get(f"/v1/config/{args.kind}"):
        print(entry["Name"])
    return 0


def _config_delete(args: argparse.Namespace) -> int:
    _client(args).delete(f"/v1/config/{args.kind}/{args.name}")
    print(f"Config entry deleted: {args.kind}/{args.name}")
    return 0


def register(commands: Commands) -> None:
    svc = commands.group("services", "register and deregister services")
    p = svc.add_parser("register", help="register services from a definition file (JSON or YAML)")
    p.add_argument("file", help="service definition file, or - for stdin")
    _addr(p)
    p.set_defaults(func=_services_register)
    p = svc.add_parser("deregister", help="deregister a service by ID")
    p.add_argument("id")
    _addr(p)
    p.set_defaults(func=_services_deregister)

    cat = commands.group("catalog", "read the catalog")
    p = cat.add_parser("services", help="list services and their tags")
    _addr(p)
    p.set_defaults(func=_catalog_services)

    ixn = commands.group("intention", "manage intentions (who may connect to whom)")
    p = ixn.add_parser("create", help="create or replace the intention SRC => DST")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--allow", action="store_true", help="allow (the default)")
    act.add_argument("--deny", action="store_true", help="deny")
    p.add_argument("--description", help="free text stored with the intention")
    p.add_argument("source", help="source service, NAME or NS/NAME; * for any")
    p.add_argument("destination", help="destination service, NAME or NS/NAME; * for any")
    _addr(p)
    p.set_defaults(func=_intention_create)
    for name, func, text in (
        ("delete", _intention_delete, "delete the intention SRC => DST"),
        ("check", _intention_check, "would SRC be allowed to connect to DST? exit 0 yes, 2 no"),
    ):
        p = ixn.add_parser(name, help=text, description=text)
        p.add_argument("source")
        p.add_argument("destination")
        _addr(p)
        p.set_defaults(func=func)
    p = ixn.add_parser("list", help="list intentions by precedence")
    _addr(p)
    p.set_defaults(func=_intention_list)

    cfg = commands.group("config", "manage config entries")
    p = cfg.add_parser("write", help="write a config entry from a file (JSON or YAML)")
    p.add_argument("file", help="config entry file, or - for stdin")
    _addr(p)
    p.set_defaults(func=_config_write)
    for name, func, text in (
        ("read", _config_read, "print a config entry"),
        ("delete", _config_delete, "delete a config entry"),
    ):
        p = cfg.add_parser(name, help=text)
        p.add_argument("--kind", required=True)
        p.add_argument("--name", required=True)
        _addr(p)
        p.set_defaults(func=func)
    p = cfg.add_parser("list", help="list config entries of a kind")
    p.add_argument("--kind", required=True)
    _addr(p)
    p.set_defaults(func=_config_list)
