"""Consul's Go-style flags for every ``loom`` command, at the parser level.

Consul users type ``-flag value``, ``-flag=value`` and boolean ``-flag`` (Go's ``flag``
package); argparse reads a single dash as a cluster of short options, so ``-deny`` was a usage
error. ``go_style`` rewrites such words into argparse's ``--flag`` spelling before parsing,
for whichever parser the command words select, so a command module added later gets the
spellings without doing anything. It is pure: it reads the parser tree and returns new words.

A word is rewritten only when it is one dash and a name (``-kind``, ``-format=json``) and
``--name`` is an option of the chosen subparser: short options (``-f``, ``-o``, ``-c``),
negative numbers (``-5``) and unknown words are left for argparse, and so is the value that
follows an option taking one (``-description -deny`` keeps ``-deny`` as the text). Go's
``-bool=true`` / ``-bool=false`` becomes the flag or nothing. Words after ``--`` never reach
this function (``loom.cli`` cuts them off first).

This module also holds the output helper every listing or reading command shares:
``add_format_flag`` (``-format=json``) and ``emit`` (the table, or the JSON).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

_TRUE = ("true", "1", "t", "yes", "on")
_FALSE = ("false", "0", "f", "no", "off")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _long_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        opt: action
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--")
    }


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and action.nargs != "?"


def _is_bool(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)


def go_style(parser: argparse.ArgumentParser, words: Sequence[str]) -> list[str]:
    """``words`` with Consul's single-dash long flags in argparse's ``--`` spelling."""
    out: list[str] = []
    current = parser
    options = _long_options(current)
    subs = _subcommands(current)
    skip_next = False
    for word in words:
        if skip_next:
            out.append(word)
            skip_next = False
            continue
        if subs and word in subs:
            current = subs[word]
            options, subs = _long_options(current), _subcommands(current)
            out.append(word)
            continue
        if not word.startswith("-") or word == "-":
            out.append(word)
            continue
        name, eq, value = word.partition("=")
        if not name.startswith("--") and len(name) > 2 and ("-" + name) in options:
            name = "-" + name
        action = options.get(name)
        if action is None:
            out.append(word)
            continue
        if eq and _is_bool(action) and value.lower() in _TRUE + _FALSE:
            if value.lower() in _TRUE:
                out.append(name)
            continue
        out.append(name + eq + value)
        skip_next = not eq and _takes_value(action)
    return out


# --- output shared by every command that lists or reads ----------------------------------

FORMATS = ("table", "json")


def add_format_flag(p: argparse.ArgumentParser, default: str = "table") -> None:
    """``-format=json`` (Consul's flag) on a command that lists or reads something."""
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=default,
        help=f"output: a table for people, or the server's JSON for scripts (default {default})",
    )


def emit(args: argparse.Namespace, data: Any, table: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON (``--format json``: indented, keys sorted) or as ``table``."""
    if getattr(args, "format", "table") == "json":
        sys.stdout.write(as_json(data))
    else:
        sys.stdout.write(table(data))


def as_json(data: Any) -> str:
    """The JSON every ``-format=json`` prints: two-space indent, sorted keys, a newline."""
    import json  # here: ``loom --help`` parses with go_style above and prints no JSON

    return json.dumps(data, indent=2, sort_keys=True) + "\n"
