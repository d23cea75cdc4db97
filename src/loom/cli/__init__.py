"""The ``loom`` command: one argparse parser, subcommands registered by one module each.

Every command module exposes ``register(commands: Commands)``. Modules add top-level
commands with ``commands.top.add_parser`` or join a group (``loom connect ...``,
``loom k8s ...``) with ``commands.group(name, help)``; each parser sets ``func`` to a
callable taking the parsed namespace and returning an exit code. Arguments after the first
``--`` are never parsed: they arrive as ``args.rest`` in commands that set
``takes_rest=True`` (``loom local run NAME -- CMD...``); others reject them. Errors derived
from ``LoomError`` become one line on stderr and the error's exit code; Ctrl-C is
``loom: interrupted`` and 130; nothing else is caught here.
The words before ``--`` may use Consul's Go-style spellings (``-flag value``, ``-flag=value``)
for any command's options: ``loom.cli.flags`` rewrites them for the parser they select.
A command line imports and builds the parser of its own command alone (``loom.cli.toplevel``
names the modules registering each); ``loom --help`` lists them all from that table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

from loom import __version__
from loom.errors import LoomError

Handler = Callable[[argparse.Namespace], int]


class Commands:
    """Registration surface handed to each command module."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.top: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
            title="commands", metavar="COMMAND"
        )
        self._groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}

    def group(self, name: str, help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        """The subcommand set of ``loom NAME ...``, created on first use."""
        if name not in self._groups:
            grp = self.top.add_parser(name, help=help, description=help)
            grp.set_defaults(func=_usage(grp))
            self._groups[name] = grp.add_subparsers(title="commands", metavar="COMMAND")
        return self._groups[name]


def _usage(parser: argparse.ArgumentParser) -> Handler:
    def show(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def build_parser(words: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given a command line's ``words``, the parser of its
    command alone: the modules that register its first word (``loom.cli.toplevel``), or, when
    that word names no command (``loom``, ``loom --help``, a typo), every command's name and
    help and nothing under them. Either parses those words alike, and ``loom --help`` reads
    the same (tests/unit/test_cli_toplevel.py)."""
    from loom.cli import toplevel

    parser = argparse.ArgumentParser(
        prog="loom",
        description=(
            "Loom service mesh: control plane (server), Envoy sidecar agent (dataplane), "
            "transparent proxy, DNS proxy, Kubernetes injector and a one-machine local mesh."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"loom {__version__}", help="print the version"
    )
    parser.set_defaults(func=_usage(parser))
    commands = Commands(parser)
    modules = toplevel.MODULES
    if words is not None:
        before = words[: words.index("--")] if "--" in words else words
        command = next((w for w in before if not w.startswith("-")), "")
        if command not in toplevel.OWNERS:
            for name, help, _ in toplevel.TOP:
                commands.top.add_parser(name, help=help)
            return parser
        modules = toplevel.OWNERS[command]
    for name in modules:
        importlib.import_module(f"loom.cli.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Ctrl-C at any point, the imports of start-up included, is one line
    and exit 130 (the shell's code for SIGINT), never a traceback.

    Run as the program (``argv`` None), an interrupted process ends right there with
    ``os._exit``: the event loop's teardown at interpreter shutdown could otherwise re-deliver
    the SIGINT and end it by the signal instead of the status it printed."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        interrupted()
        if argv is None:
            exit_now(130)
        return 130


def exit_now(code: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def interrupted() -> None:
    """Say so once, and ignore any further Ctrl-C while the process winds down (a second
    SIGINT during interpreter teardown would otherwise kill it with a different status)."""
    with contextlib.suppress(OSError, KeyboardInterrupt, ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("loom: interrupted", file=sys.stderr)


def parse(parser: argparse.ArgumentParser, words: Sequence[str]) -> argparse.Namespace:
    """The namespace of one command line: the words before the first ``--`` in Go or
    argparse spelling, the words after it as ``rest``, untouched."""
    from loom.cli.flags import go_style

    words = list(words)
    rest: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, rest = words[:cut], words[cut + 1 :]
    args = parser.parse_args(go_style(parser, words))
    if rest and not getattr(args, "takes_rest", False):
        parser.error("this command takes no arguments after --")
    args.rest = rest
    return args


def _run(argv: Sequence[str] | None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = parse(build_parser(words), words)
    func: Handler = args.func
    try:
        return int(func(args))
    except LoomError as exc:
        print(f"loom: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file or program the command needs: one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"loom: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
