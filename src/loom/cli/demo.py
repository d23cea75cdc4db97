"""``loom demo`` (the local mesh walkthrough) and ``loom http-echo`` (its sample app)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loom.cli import Commands


def _echo(args: argparse.Namespace) -> int:
    from loom.aio import run
    from loom.demo.echo import serve_echo

    text = args.text
    if not args.keep_quotes and len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]  # the seeds write -text="hello world"
    run(serve_echo(args.listen, text, args.instance))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from loom.demo.walkthrough import demo

    return demo(loopback=args.loopback, datacenters=args.datacenters)


def register(commands: Commands) -> None:
    p = commands.top.add_parser(
        "demo",
        help="walk through the seeds' examples on a local mesh (root) or on loopback",
        description=(
            "Build a mesh on this machine and walk through the seed examples with explained "
            "steps: static-server/static-client, curl by name, a deny intention (exit 52), the "
            "multi-port web/web-admin pod. Needs root for pods; otherwise runs the loopback "
            "part and says what it skipped. Cleans up after itself."
        ),
    )
    p.add_argument(
        "--loopback", action="store_true", help="only the loopback part (no pods), even as root"
    )
    p.add_argument(
        "--datacenters", type=int, choices=(1, 2), default=1,
        help="2: two federated datacenters instead (dc1 and dc2, a mesh gateway each): a "
        "call from dc1 answered in dc2, a deny intention written in dc1 enforced in dc2, "
        "failover to dc2 and back (root; default 1, the seeds' walkthrough)",
    )  # fmt: skip
    p.set_defaults(func=_demo)
    p = commands.top.add_parser(
        "http-echo",
        help="a tiny HTTP server answering fixed text (like hashicorp/http-echo)",
        description="Answer every HTTP request with TEXT; used by the demo, tests and benchmarks.",
    )
    p.add_argument("-text", "--text", required=True, help="the response body")
    p.add_argument("-listen", "--listen", default=":5678", help="[HOST]:PORT (default :5678)")
    p.add_argument("--instance", default="", help="value of the X-Instance response header")
    p.add_argument(
        "--keep-quotes", action="store_true",
        help='answer -text="hello world" with the quotes, as the hashicorp/http-echo image does '
        "(its arguments reach it without a shell); loom local apply runs the image so",
    )  # fmt: skip
    p.set_defaults(func=_echo)
