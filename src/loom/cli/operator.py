"""CLI for operators: ``loom catalog nodes|datacenters``, ``loom members`` and
``loom connect ca get-config|set-config``, printed as Consul's CLI prints them.

The tables are Consul's (columns two spaces apart, a node ID cut to 8 characters unless
``--detailed``), made by pure ``format_*`` functions so they are golden-tested without a
server. ``loom catalog`` is the group ``cli.api`` makes; this module adds to it. The API
client is imported when a command runs, never to describe one.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from loom.cli.api import _addr, _client
from loom.cli.documents import read_document
from loom.cli.errors import InputError

if TYPE_CHECKING:
    from loom.cli import Commands

Doc = dict[str, Any]
MEMBER_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
"""Serf's member states, by the number ``/v1/agent/members`` gives."""


def columns(rows: list[tuple[str, ...]]) -> str:
    """Rows as columns two spaces apart, the last one not padded (Consul's columnize)."""
    if not rows:
        return ""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [f"{v:<{widths[c]}}" for c, v in enumerate(r[:-1])] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _pairs(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def format_nodes(nodes: list[Doc], detailed: bool = False) -> str:
    """``consul catalog nodes``: Node, ID, Address, DC (and, detailed, the full ID,
    TaggedAddresses and Meta)."""
    rows: list[tuple[str, ...]]
    if detailed:
        head: tuple[str, ...] = ("Node", "ID", "Address", "DC", "TaggedAddresses", "Meta")
        rows = [
            (
                n["Node"], n.get("ID", ""), n["Address"], n.get("Datacenter", ""),
                _pairs(n.get("TaggedAddresses") or {}), _pairs(n.get("Meta") or {}),
            )
            for n in nodes
        ]  # fmt: skip
    else:
        head = ("Node", "ID", "Address", "DC")
        rows = [
            (n["Node"], n.get("ID", "")[:8], n["Address"], n.get("Datacenter", "")) for n in nodes
        ]
    return columns([head, *sorted(rows)])


def format_members(members: list[Doc], detailed: bool = False) -> str:
    """``consul members``: Node, Address, Status, Type, Build, Protocol, DC, Partition,
    Segment (detailed: Node, Address, Status, Tags)."""
    rows: list[tuple[str, ...]] = []
    for m in sorted(members, key=lambda m: str(m["Name"])):
        tags: dict[str, str] = m.get("Tags") or {}
        address = f"{m['Addr']}:{m['Port']}"
        status = MEMBER_STATUS.get(int(m.get("Status", 0)), "unknown")
        if detailed:
            rows.append(
                (m["Name"], address, status, ",".join(f"{k}={v}" for k, v in sorted(tags.items())))
            )
            continue
        kind = "server" if tags.get("role") == "consul" else "client"
        build = tags.get("build", "").split(":")[0]
        rows.append(
            (m["Name"], address, status, kind, build, tags.get("vsn", ""), tags.get("dc", ""),
             "default", "<all>" if kind == "server" else "<default>")
        )  # fmt: skip
    head = (
        ("Node", "Address", "Status", "Tags")
        if detailed
        else (
            "Node",
            "Address",
            "Status",
            "Type",
            "Build",
            "Protocol",
            "DC",
            "Partition",
            "Segment",
        )
    )
    return columns([head, *rows])


# -- commands --------------------------------------------------------------------------------


def _node_of(s: Doc) -> Doc:
    """The node part of a catalog service node, in a node's shape."""
    return {
        "Node": s["Node"],
        "ID": s["ID"],
        "Address": s["Address"],
        "Datacenter": s["Datacenter"],
        "TaggedAddresses": s["TaggedAddresses"],
        "Meta": s["NodeMeta"],
    }


def _catalog_nodes(args: argparse.Namespace) -> int:
    client = _client(args)
    params = {"filter": args.filter} if args.filter else {}
    for pair in args.node_meta or []:
        if ":" not in pair and "=" not in pair:
            raise InputError(f"--node-meta: {pair!r} is not KEY=VALUE")
    meta = [p.replace("=", ":", 1) if ":" not in p else p for p in args.node_meta or []]
    if args.service:
        found = client.get(f"/v1/catalog/service/{args.service}", **params)
        nodes = list({s["Node"]: _node_of(s) for s in found}.values())
        if meta:
            wanted = dict(p.split(":", 1) for p in meta)
            nodes = [n for n in nodes if all(n["Meta"].get(k) == v for k, v in wanted.items())]
    else:
        path = "/v1/catalog/nodes"
        if meta:
            from urllib.parse import urlencode

            path += "?" + urlencode([("node-meta", p) for p in meta])
        nodes = client.get(path, **params)
    if not nodes:
        print("No nodes match the given query - try expanding your search.", file=sys.stderr)
        return 0
    sys.stdout.write(format_nodes(nodes, args.detailed))
    return 0


def _catalog_datacenters(args: argparse.Namespace) -> int:
    found = _client(args).get("/v1/catalog/datacenters")
    if not found:
        print("No datacenters found", file=sys.stderr)
        return 1
    for dc in found:
        print(dc)
    return 0


def _members(args: argparse.Namespace) -> int:
    import re

    members = _client(args).get("/v1/agent/members", **({"wan": "1"} if args.wan else {}))
    if args.status:
        try:
            wanted = re.compile(args.status)
        except re.error as exc:
            raise InputError(f"--status: {exc}") from exc
        members = [m for m in members if wanted.search(MEMBER_STATUS.get(m.get("Status", 0), ""))]
    if not members:
        return 2  # Consul's exit code when nothing matched
    sys.stdout.write(format_members(members, args.detailed))
    return 0


def _ca_get_config(args: argparse.Namespace) -> int:
    config = _client(args).get("/v1/connect/ca/configuration")
    print(json.dumps(config, indent=2))
    return 0


def _ca_set_config(args: argparse.Namespace) -> int:
    config = read_document(args.config_file)
    if not isinstance(config, dict):
        raise InputError(f"{args.config_file}: expected an object (Provider, Config)")
    _client(args).put("/v1/connect/ca/configuration", config)
    print("Configuration updated!")
    return 0


def _usage_of(parser: argparse.ArgumentParser) -> Any:
    def show(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def register(commands: Commands) -> None:
    cat = commands.group("catalog", "read the catalog")
    p = cat.add_parser("nodes", help="list the nodes of the catalog (Consul's table)")
    p.add_argument("--detailed", action="store_true",
                   help="show the full node ID, tagged addresses and meta")  # fmt: skip
    p.add_argument("--service", metavar="NAME", help="only the nodes providing service NAME")
    p.add_argument("--node-meta", metavar="KEY=VALUE", action="append",
                   help="only nodes with this meta pair (repeat: all must match)")  # fmt: skip
    p.add_argument("--filter", metavar="EXPR", help="a filter expression on the nodes' fields")
    _addr(p)
    p.set_defaults(func=_catalog_nodes)
    p = cat.add_parser("datacenters", help="list the datacenters this server knows")
    _addr(p)
    p.set_defaults(func=_catalog_datacenters)

    p = commands.top.add_parser(
        "members", help="list the members of the server's pool (Consul's table)"
    )
    p.add_argument("--detailed", action="store_true", help="show each member's tags")
    p.add_argument("--wan", action="store_true", help="the WAN pool (names end in .DC)")
    p.add_argument("--status", metavar="REGEX", help="only members whose status matches REGEX")
    _addr(p)
    p.set_defaults(func=_members)

    connect = commands.group("connect", "sidecar helpers (Envoy bootstrap, traffic redirection)")
    ca = connect.add_parser("ca", help="read and change the Connect CA's configuration")
    ca_cmds = ca.add_subparsers(title="commands", metavar="COMMAND")
    ca.set_defaults(func=_usage_of(ca))
    p = ca_cmds.add_parser("get-config", help="print the CA configuration as JSON")
    _addr(p)
    p.set_defaults(func=_ca_get_config)
    p = ca_cmds.add_parser(
        "set-config", help="change the CA configuration (PUT /v1/connect/ca/configuration)"
    )
    p.add_argument("--config-file", metavar="PATH", required=True,
                   help="JSON or YAML file with Provider and Config, or - for stdin")  # fmt: skip
    _addr(p)
    p.set_defaults(func=_ca_set_config)


__all__ = ["columns", "format_members", "format_nodes", "register"]
