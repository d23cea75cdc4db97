"""Every command, flag and argument of ``loom`` is described in ``--help``, with its default.

Walks the whole parser tree as ``build_parser`` makes it, so a command added by any module
(those merged later included) is held to the same rule without being listed here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from loom.cli import build_parser

HIDDEN = {("loom server", "--leaf-ttl")}
"""Options deliberately left out of ``--help`` (test-only knobs), each named here."""

_NO_DEFAULT = (None, False, "", [], (), argparse.SUPPRESS)


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub, argparse.Action([], name, help=helps.get(name))
                yield from _parsers(sub, f"{path} {name}")


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if isinstance(
            action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction
        ):
            continue
        yield action


def _name(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def test_every_command_has_a_one_line_description_in_its_groups_listing() -> None:
    undescribed = [path for path, _, entry in _parsers(build_parser(), "loom") if not entry.help]
    assert undescribed == []


def test_every_flag_and_argument_of_every_command_has_help() -> None:
    missing = [
        (path, _name(action))
        for path, parser, _ in _parsers(build_parser(), "loom")
        for action in _options(parser)
        if (not action.help or action.help == argparse.SUPPRESS)
        and (path, _name(action)) not in HIDDEN
    ]
    assert missing == []


def test_every_flag_with_a_default_states_it_in_its_help() -> None:
    silent = []
    for path, parser, _ in _parsers(build_parser(), "loom"):
        formatter = parser._get_formatter()
        for action in _options(parser):
            if action.default in _NO_DEFAULT or action.help in (None, argparse.SUPPRESS):
                continue
            text = formatter._expand_help(action)
            if "default" not in text.lower():
                silent.append((path, _name(action), action.default))
    assert silent == []


def test_the_help_of_every_command_renders() -> None:
    for path, parser, _ in _parsers(build_parser(), "loom"):
        assert parser.format_help().startswith(f"usage: {path}"), path
