"""``loom query create|list|read|update|delete|execute|explain``: prepared queries from the
command line, over ``/v1/query`` and the one API client.

Consul has no CLI for prepared queries (its users ``curl`` the API); these commands take a
query as flags (``--service``, ``--tag``, ``--only-passing``, ``--near``, ``--template``...)
or as a file (``--file``: JSON, YAML or HCL of the API's body), and print tables for people
or, with ``-format=json``, the server's JSON as it answered. ``update`` replaces the whole
query, as ``PUT /v1/query/:id`` does (unset fields are reset). Formatting lives in pure
``format_*`` functions, tested without a server.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from loom.cli.api import _addr, _client
from loom.cli.documents import read_document
from loom.cli.errors import UsageError
from loom.cli.flags import add_format_flag, as_json, emit

if TYPE_CHECKING:
    from loom.cli import Commands

Doc = dict[str, Any]


# -- formatting (pure) ---------------------------------------------------------------------------


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    out = []
    for r in rows:
        cells = [f"{cell:<{widths[n]}}" for n, cell in enumerate(r[:-1])]
        out.append("  ".join([*cells, r[-1]]).rstrip() + "\n")
    return "".join(out)


def format_queries(queries: list[Doc]) -> str:
    """``query list``: one line per query, by name then ID."""
    rows: list[tuple[str, ...]] = [("ID", "NAME", "SERVICE", "TEMPLATE")]
    for q in sorted(queries, key=lambda q: (q.get("Name") or "", q["ID"])):
        template = (q.get("Template") or {}).get("Type") or "-"
        rows.append((q["ID"], q.get("Name") or "-", q["Service"]["Service"], template))
    return _table(rows)


def format_query(q: Doc) -> str:
    """``query read`` and ``explain``: one query as ``Key: value`` lines."""
    s = q["Service"]
    failover = s.get("Failover") or {}
    rows = [
        ("ID", q.get("ID") or "-"),
        ("Name", q.get("Name") or "-"),
        ("Service", s["Service"]),
        ("Namespace", s.get("Namespace") or "default"),
        ("Tags", ", ".join(s.get("Tags") or []) or "-"),
        ("OnlyPassing", str(bool(s.get("OnlyPassing"))).lower()),
        ("Near", s.get("Near") or "-"),
        ("Failover", ", ".join(failover.get("Datacenters") or []) or "-"),
        ("Template", (q.get("Template") or {}).get("Type") or "-"),
        ("DNS TTL", (q.get("DNS") or {}).get("TTL") or "-"),
    ]
    width = max(len(k) for k, _ in rows) + 1
    return "".join(f"{k + ':':<{width}} {v}\n" for k, v in rows)


def format_read(queries: list[Doc]) -> str:
    """``query read``: the one-element list the server answers."""
    return "".join(format_query(q) for q in queries)


def _status(checks: list[Doc]) -> str:
    statuses = {c.get("Status") for c in checks}
    return next((s for s in ("critical", "warning") if s in statuses), "passing")


def format_execution(result: Doc) -> str:
    """``query execute``: the instances found, in the order the server answered."""
    rows: list[tuple[str, ...]] = [("NODE", "ADDRESS", "SERVICE ID", "PORT", "STATUS")]
    for hit in result.get("Nodes") or []:
        node, svc = hit["Node"], hit["Service"]
        rows.append((node["Node"], svc.get("Address") or node["Address"], svc["ID"],
                     str(svc["Port"]), _status(hit.get("Checks") or [])))  # fmt: skip
    if len(rows) == 1:
        return f"No instance of {result.get('Service', '?')} found\n"
    return _table(rows)


# -- the query a command describes ------------------------------------------------------------


def body_of(args: argparse.Namespace) -> Doc:
    """The API body of ``create``/``update``: the ``--file``'s, else built from the flags."""
    if args.file:
        if args.service:
            raise UsageError("loom query: give --file or --service, not both")
        doc = read_document(args.file)
        if not isinstance(doc, dict):
            raise UsageError(f"loom query: {args.file} must hold one query object")
        return doc
    if not args.service:
        raise UsageError("loom query: --service (or --file) is required")
    service: Doc = {"Service": args.service, "OnlyPassing": args.only_passing}
    if args.tag:
        service["Tags"] = list(args.tag)
    if args.near:
        service["Near"] = args.near
    if args.namespace:
        service["Namespace"] = args.namespace
    if args.failover_dc:
        service["Failover"] = {"Datacenters": list(args.failover_dc)}
    body: Doc = {"Service": service}
    if args.name:
        body["Name"] = args.name
    if args.ttl:
        body["DNS"] = {"TTL": args.ttl}
    if args.session:
        body["Session"] = args.session
    if args.template:
        body["Template"] = {"Type": "name_prefix_match", "Regexp": args.template_regexp or ""}
    elif args.template_regexp:
        raise UsageError("loom query: --template-regexp needs --template")
    return body


# -- commands -------------------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    out = _client(args).request("POST", "/v1/query", body_of(args)).body
    if args.format == "json":
        print(as_json(out), end="")
    else:
        print(out["ID"])
    return 0


def _list(args: argparse.Namespace) -> int:
    emit(args, _client(args).get("/v1/query") or [], format_queries)
    return 0


def _read(args: argparse.Namespace) -> int:
    found = _client(args).get(f"/v1/query/{args.id}")
    emit(args, found, format_read)
    return 0


def _update(args: argparse.Namespace) -> int:
    _client(args).put(f"/v1/query/{args.id}", body_of(args))
    print(f"Success! Updated query: {args.id}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    _client(args).delete(f"/v1/query/{args.id}")
    print(f"Success! Deleted query: {args.id}")
    return 0


def _execute(args: argparse.Namespace) -> int:
    params = {k: str(v) for k, v in (("limit", args.limit), ("near", args.near)) if v}
    emit(args, _client(args).get(f"/v1/query/{args.query}/execute", **params), format_execution)
    return 0


def _explain(args: argparse.Namespace) -> int:
    emit(args, _client(args).get(f"/v1/query/{args.query}/explain"),
         lambda out: format_query(out["Query"]))  # fmt: skip
    return 0


def _query_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", help="the query as a file (JSON, YAML or HCL), or - for stdin")
    p.add_argument("--name", help="the query's name (executed by name; empty: by ID only)")
    p.add_argument("--service", help="the service the query looks up")
    p.add_argument("--namespace", help="the service's namespace (default: default)")
    p.add_argument(
        "--tag", action="append", help="a tag instances must have; !TAG: must not (repeatable)"
    )
    p.add_argument(
        "--only-passing", action="store_true", help="drop instances with warning checks too"
    )
    p.add_argument("--near", help="sort this node's instances first (_agent: the server's)")
    p.add_argument("--ttl", help="the DNS TTL of the query's answers, e.g. 10s")
    p.add_argument("--session", help="a session the query lives as long as")
    p.add_argument(
        "--failover-dc", action="append", help="a datacenter to fail over to (repeatable)"
    )
    p.add_argument(
        "--template", action="store_true", help="a name_prefix_match template for --name"
    )
    p.add_argument("--template-regexp", help="the template's regexp (${match(N)} groups)")


def register(commands: Commands) -> None:
    q = commands.group("query", "manage and run prepared queries")
    p = q.add_parser("create", help="create a prepared query; prints its ID")
    _query_flags(p)
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_create)

    p = q.add_parser("list", help="list the prepared queries the token may read")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_list)

    p = q.add_parser("read", help="print one prepared query")
    p.add_argument("id", help="the query's ID")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_read)

    p = q.add_parser("update", help="replace a prepared query (unset fields are reset)")
    p.add_argument("id", help="the query's ID")
    _query_flags(p)
    _addr(p)
    p.set_defaults(func=_update)

    p = q.add_parser("delete", help="delete a prepared query")
    p.add_argument("id", help="the query's ID")
    _addr(p)
    p.set_defaults(func=_delete)

    p = q.add_parser("execute", help="run a prepared query by ID or name")
    p.add_argument("query", help="the query's ID or name")
    p.add_argument(
        "--limit", type=int, default=0, help="at most this many instances (default 0: all)"
    )
    p.add_argument("--near", help="sort this node's instances first, overriding the query's")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_execute)

    p = q.add_parser("explain", help="print the query a name would run (a template rendered)")
    p.add_argument("query", help="the query's ID or name")
    add_format_flag(p)
    _addr(p)
    p.set_defaults(func=_explain)
