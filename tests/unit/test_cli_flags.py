"""Consul's Go-style flags (``-flag value``, ``-flag=value``, ``-bool``) on every command,
through the real ``loom`` parser tree."""

from __future__ import annotations

import argparse

import pytest

from loom.cli import build_parser, main, parse
from loom.cli.flags import go_style


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def test_single_dash_long_flags_of_the_chosen_command_get_two_dashes(parser) -> None:
    words = ["config", "read", "-kind", "service-defaults", "-name=web", "-http-addr=h:1"]
    assert go_style(parser, words) == [
        "config", "read", "--kind", "service-defaults", "--name=web", "--http-addr=h:1",
    ]  # fmt: skip
    args = parser.parse_args(go_style(parser, words))
    assert (args.kind, args.name, args.http_addr) == ("service-defaults", "web", "h:1")


def test_consul_boolean_spellings_work_with_and_without_a_value(parser) -> None:
    args = parser.parse_args(go_style(parser, ["intention", "create", "-deny", "a", "b"]))
    assert args.deny is True
    args = parser.parse_args(
        go_style(parser, ["intention", "create", "-deny=false", "-allow=true", "a", "b"])
    )
    assert (args.deny, args.allow) == (False, True)


def test_short_flags_negative_numbers_and_unknown_words_are_left_to_argparse(parser) -> None:
    words = ["inject", "-f", "-", "-5", "-nosuchflag", "-x=1"]
    assert go_style(parser, words) == words


def test_the_value_of_an_option_is_never_rewritten_even_when_it_looks_like_a_flag(
    parser,
) -> None:
    words = ["intention", "create", "-description", "-deny", "a", "b"]
    assert go_style(parser, words) == [
        "intention", "create", "--description", "-deny", "a", "b",
    ]  # fmt: skip


def test_a_flag_known_only_to_another_command_is_not_rewritten(parser) -> None:
    assert go_style(parser, ["catalog", "services", "-kind", "x"]) == [
        "catalog", "services", "-kind", "x",
    ]  # fmt: skip


def test_words_after_a_double_dash_are_never_translated(parser) -> None:
    args = parse(parser, ["local", "exec", "web", "--", "-name", "-format=json"])
    assert args.name == "web"
    assert args.rest == ["-name", "-format=json"]


def test_loom_version_prints_the_package_version(capsys) -> None:
    from loom import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"loom {__version__}\n"
