"""``loom --help`` and ``loom COMMAND ...`` build their parser from ``loom.cli.toplevel`` (each
command's help and the modules registering it) instead of from every command module: the
table must say what the modules register, and the parser built from it must read and parse
as the whole tree does."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator

import pytest

from loom.cli import Commands, build_parser, main, toplevel


def _top(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    [top] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return top


def _helps(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str]]:
    """(command path, its ``--help`` text) of ``parser`` and every parser under it."""
    yield path, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _helps(sub, f"{path} {name}")


def test_the_table_of_top_level_commands_is_what_the_command_modules_register() -> None:
    full = _top(build_parser())
    owners: dict[str, list[str]] = {name: [] for name in full.choices}
    for module in toplevel.MODULES:
        alone = Commands(argparse.ArgumentParser(prog="loom"))
        importlib.import_module(f"loom.cli.{module}").register(alone)
        for name in alone.top.choices:
            owners[name].append(module)
    want = tuple((a.dest, a.help, tuple(owners[a.dest])) for a in full._choices_actions)
    table = "".join(f"    {row!r},\n" for row in want)
    assert want == toplevel.TOP, f"loom/cli/toplevel.py's TOP should read:\n{table}"


@pytest.mark.parametrize("words", [[], ["--help"], ["--version"], ["no-such-command"]])
def test_a_command_line_naming_no_command_gets_the_whole_top_level_listing(
    words: list[str],
) -> None:
    assert build_parser(words).format_help() == build_parser().format_help()
    assert list(_top(build_parser(words)).choices) == [name for name, _, _ in toplevel.TOP]


@pytest.mark.parametrize("command", [name for name, _, _ in toplevel.TOP])
def test_a_command_built_from_its_modules_alone_reads_as_in_the_whole_tree(command: str) -> None:
    alone = _top(build_parser([command, "--help"])).choices[command]
    whole = _top(build_parser()).choices[command]
    assert dict(_helps(alone, f"loom {command}")) == dict(_helps(whole, f"loom {command}"))


def test_the_first_word_that_is_no_option_selects_the_command_and_words_after_dashes_do_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert list(_top(build_parser(["--format", "x"])).choices) == list(toplevel.OWNERS)
    assert "kv" in _top(build_parser(["-h", "kv", "get"])).choices
    assert "server" not in _top(build_parser(["kv", "get", "--", "server"])).choices
    with pytest.raises(SystemExit):  # no command before the dashes: refused, as before
        main(["--", "kv"])
    assert "takes no arguments after --" in capsys.readouterr().err
