"""``loom intention explain SRC DST``: why SRC may or may not reach DST, in plain lines.

Reads ``GET /v1/loom/intentions/explain`` (``loom.xds.explain`` on the server) and prints the
decision, the intention that made it (precedence, L4/L7) or the default policy, whether the
source's sidecars have the destination as an upstream, and what the destination's generated
Envoy RBAC says. Exit 0 when allowed, 2 when denied (as ``loom intention check``).
Formatting is the pure ``format_explanation``, golden-testable without a server.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.cli import Commands

Doc = dict[str, Any]


def format_explanation(doc: Doc) -> str:
    """The explain endpoint's answer as lines a person reads top to bottom."""
    req = doc.get("Request")
    what = f" ({req['Method'] or '*'} {req['Path'] or '/'})" if req else ""
    verdict = "ALLOWED" if doc["Allowed"] else "DENIED"
    lines = [
        f"{doc['Source']} => {doc['Destination']}{what}: {verdict}",
        f"  reason: {doc['Reason']}",
    ]
    i = doc.get("Intention")
    if i is None:
        lines.append(f"  decided by: the default policy ({doc['DefaultPolicy']})")
    else:
        action = i["Action"] or f"{i['Permissions']} L7 permission(s)"
        lines.append(
            f"  decided by: intention {i['SourceNS']}/{i['SourceName']} => "
            f"{i['DestinationNS']}/{i['DestinationName']} ({action}), precedence "
            f"{i['Precedence']}, {doc['Layer']}"
        )
        lines.append(f"  default policy: {doc['DefaultPolicy']}")
    ups = doc.get("Upstreams") or []
    if not ups:
        lines.append("  upstream: the source has no sidecar")
    for u in ups:
        where = f"{u['Kind']} at {u['Address']}" if u["Address"] else u["Kind"]
        lines.append(f"  upstream: {u['Proxy']}: {where if u['Kind'] else 'none'}")
    rbac = doc.get("Rbac") or []
    if not rbac:
        lines.append("  rbac: the destination has no sidecar")
    for v in rbac:
        how = f"admitted by policy {v['Policy']}" if v["Allowed"] else "no policy admits the source"
        agree = "" if v["Agrees"] else " (DISAGREES with the intentions)"
        lines.append(f"  rbac: {v['Proxy']} ({v['Filter']}): {how}{agree}")
    lines.extend(f"  note: {n}" for n in doc.get("Notes") or [])
    return "\n".join(lines) + "\n"


def _explain(args: argparse.Namespace) -> int:
    import json

    from loom.cli.api import _client

    params = {"source": args.source, "destination": args.destination}
    if args.method:
        params["method"] = args.method
    if args.path:
        params["path"] = args.path
    doc = _client(args).get("/v1/loom/intentions/explain", **params)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.json else format_explanation(doc))
    return 0 if doc["Allowed"] else 2


def register(commands: Commands) -> None:
    from loom.cli.api import _addr

    ixn = commands.group("intention", "manage intentions (who may connect to whom)")
    text = (
        "why may SRC (not) connect to DST? the deciding intention, the source's upstream and "
        "the destination's Envoy RBAC; exit 0 allowed, 2 denied"
    )
    p = ixn.add_parser("explain", help=text, description=text)
    p.add_argument("source", help="source service, NAME or NS/NAME")
    p.add_argument("destination", help="destination service, NAME or NS/NAME")
    p.add_argument("--method", help="HTTP method of a request, for L7 intentions (e.g. GET)")
    p.add_argument("--path", help="HTTP path of a request, for L7 intentions (e.g. /admin)")
    p.add_argument("--json", action="store_true", help="print the endpoint's JSON answer")
    _addr(p)
    p.set_defaults(func=_explain)
