"""``loom intention create|get|delete|check|match|list``: Consul's intention commands.

Over the legacy exact-match endpoints (``/v1/connect/intentions/exact?source=&destination=``),
which Loom keeps in ``service-intentions`` config entries. As Consul's CLI does, ``create``
refuses to replace an existing intention unless ``-replace`` is given, and ``-file`` reads
intentions from files (JSON, YAML or HCL objects with ``SourceName``, ``DestinationName``,
``Action``...). Formatting is kept in pure ``format_*`` functions, golden-tested without a
server.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from loom.cli.errors import InputError, UsageError
from loom.cli.flags import add_format_flag, emit

if TYPE_CHECKING:
    from loom.api.client import Client as SyncClient
    from loom.cli import Commands


def _name(ns: str, name: str) -> str:
    return f"{ns}/{name}" if ns and ns != "default" else name


def format_intentions(intentions: list[dict[str, Any]]) -> str:
    """A table by precedence, as the server lists them; L7 intentions show as ``L7``."""
    rows = [("SOURCE", "DESTINATION", "ACTION", "PRECEDENCE")]
    for i in intentions:
        rows.append((
            _name(i["SourceNS"], i["SourceName"]),
            _name(i["DestinationNS"], i["DestinationName"]),
            i["Action"] or "L7",
            str(i["Precedence"]),
        ))  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}\n" for r in rows
    )


def format_intention(i: dict[str, Any]) -> str:
    """One intention as ``Key: value`` lines, as ``consul intention get`` prints it."""
    rows = [
        ("Source", _name(i["SourceNS"], i["SourceName"])),
        ("Destination", _name(i["DestinationNS"], i["DestinationName"])),
        ("Action", i["Action"] or _l7(len(i.get("Permissions") or []))),
        ("Precedence", str(i["Precedence"])),
        ("Description", i.get("Description") or ""),
    ]
    width = max(len(k) for k, _ in rows) + 1
    return "".join(f"{k + ':':<{width}}  {v}".rstrip() + "\n" for k, v in rows)


def _l7(permissions: int) -> str:
    return f"L7 ({permissions} permission{'' if permissions == 1 else 's'})"


def format_matches(matches: dict[str, list[dict[str, Any]]]) -> str:
    """``intention match``: the intentions that apply to each name asked, by precedence."""
    out = []
    for name, found in matches.items():
        if len(matches) > 1:
            out.append(f"{name}:\n")
        out.append(format_intentions(found))
    return "".join(out)


def _client(args: argparse.Namespace) -> SyncClient:
    from loom.cli.api import _client

    return _client(args)


def _exact(client: SyncClient, source: str, destination: str) -> dict[str, Any] | None:
    from loom.api import NotFoundError

    try:
        found: dict[str, Any] = client.get(
            "/v1/connect/intentions/exact", source=source, destination=destination
        )
    except NotFoundError:
        return None
    return found


def _from_files(paths: list[str]) -> list[tuple[str, str, str, str]]:
    """(source, destination, action, description) of each intention in the files."""
    from loom.cli.documents import read_document

    out = []
    for path in paths:
        doc = read_document(path)
        for item in doc if isinstance(doc, list) else [doc]:
            if not isinstance(item, dict) or not item.get("SourceName") or not item.get(
                "DestinationName"
            ):
                raise InputError(f"{path}: expected intentions with SourceName and DestinationName")
            action = str(item.get("Action") or "allow").lower()
            if action not in ("allow", "deny"):
                raise InputError(f"{path}: Action: {action!r} is not 'allow' or 'deny'")
            out.append((
                _name(str(item.get("SourceNS") or ""), str(item["SourceName"])),
                _name(str(item.get("DestinationNS") or ""), str(item["DestinationName"])),
                action,
                str(item.get("Description") or ""),
            ))  # fmt: skip
    return out


def _create(args: argparse.Namespace) -> int:
    if args.file:
        if not args.names:
            raise UsageError("intention create -file: give one or more files")
        wanted = _from_files(args.names)
    else:
        if len(args.names) != 2:
            raise UsageError("intention create: give SRC and DST (or -file FILE...)")
        action = "deny" if args.deny else "allow"
        wanted = [(args.names[0], args.names[1], action, args.description or "")]
    client = _client(args)
    for source, destination, action, description in wanted:
        if not args.replace and _exact(client, source, destination) is not None:
            raise UsageError(
                f"Intention with source {source!r} and destination {destination!r} already "
                "exists; use -replace to replace it"
            )
        client.put(
            "/v1/connect/intentions/exact",
            {"Action": action, "Description": description},
            source=source,
            destination=destination,
        )
        print(f"Created: {source} => {destination} ({action})")
    return 0


def _get(args: argparse.Namespace) -> int:
    found = _exact(_client(args), args.source, args.destination)
    if found is None:
        raise InputError(f"no intention from {args.source} to {args.destination}")
    emit(args, found, format_intention)
    return 0


def _delete(args: argparse.Namespace) -> int:
    _client(args).delete(
        "/v1/connect/intentions/exact", source=args.source, destination=args.destination
    )
    print(f"Intention deleted: {args.source} => {args.destination}")
    return 0


def _check(args: argparse.Namespace) -> int:
    result = _client(args).get(
        "/v1/connect/intentions/check", source=args.source, destination=args.destination
    )
    print("Allowed" if result["Allowed"] else "Denied")
    return 0 if result["Allowed"] else 2


def _match(args: argparse.Namespace) -> int:
    by = "source" if args.source else "destination"
    found = _client(args).get("/v1/connect/intentions/match", by=by, name=args.name)
    emit(args, found, format_matches)
    return 0


def _list(args: argparse.Namespace) -> int:
    emit(args, _client(args).get("/v1/connect/intentions"), format_intentions)
    return 0


_SRC = "source service, NAME or NS/NAME; * for any"
_DST = "destination service, NAME or NS/NAME; * for any"


def register(commands: Commands) -> None:
    from loom.cli.api import _addr

    ixn = commands.group("intention", "manage intentions (who may connect to whom)")
    p = ixn.add_parser(
        "create",
        help="create the intention SRC => DST (or those in -file FILE...)",
        description="Create the intention SRC => DST, or each intention in the files given "
        "with -file. An existing intention between the same services is replaced only with "
        "-replace, as Consul's CLI does.",
    )
    act = p.add_mutually_exclusive_group()
    act.add_argument("--allow", action="store_true", help="allow (the default)")
    act.add_argument("--deny", action="store_true", help="deny")
    p.add_argument("--description", help="free text stored with the intention (default none)")
    p.add_argument(
        "--replace", action="store_true", help="replace an existing intention of the same pair"
    )
    p.add_argument(
        "--file",
        action="store_true",
        help="the arguments are files of intentions (JSON, YAML or HCL) instead of SRC DST",
    )
    p.add_argument("names", nargs="*", metavar="SRC DST | FILE", help=f"SRC ({_SRC}) and DST")
    _addr(p)
    p.set_defaults(func=_create)
    for name, func, text in (
        ("get", _get, "print the intention SRC => DST"),
        ("delete", _delete, "delete the intention SRC => DST"),
        ("check", _check, "would SRC be allowed to connect to DST? exit 0 yes, 2 no"),
    ):
        p = ixn.add_parser(name, help=text, description=text)
        p.add_argument("source", help=_SRC)
        p.add_argument("destination", help=_DST)
        if name == "get":
            add_format_flag(p)
        _addr(p)
        p.set_defaults(func=func)
    text = "list the intentions that apply to NAME, by precedence"
    p = ixn.add_parser("match", help=text, description=text)
    side = p.add_mutually_exclusive_group()
    side.add_argument(
        "--destination", action="store_true", help="NAME is a destination (the default)"
    )
    side.add_argument("--source", action="store_true", help="NAME is a source")
    p.add_argument("name", help="service, NAME or NS/NAME")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_match)
    p = ixn.add_parser("list", help="list intentions by precedence")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_list)
