"""The CLI front of redirect-traffic: --print output and one-line errors (no root needed)."""

from __future__ import annotations

import os

import pytest

from loom.cli import main


def test_print_shows_the_ipv4_and_ipv6_rules_without_applying(golden, capsys) -> None:
    argv = [
        "connect",
        "redirect-traffic",
        "--print",
        "--proxy-uid",
        "5995",
        "--dns-port",
        "15053",
        "--exclude-inbound-port",
        "22,9090",
        "--exclude-outbound-cidr",
        "10.96.0.0/12",
        "--exclude-outbound-cidr",
        "fd00::/8",
        "--exclude-uid",
        "0",
    ]
    assert main(argv) == 0
    golden.check("redirect/cli_print.txt", capsys.readouterr().out)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "loom: --proxy-uid is required: the UID the proxy runs as\n"),
        (["--proxy-uid", "abc"], "loom: --proxy-uid 'abc': not a number\n"),
        (
            ["--proxy-uid", "1", "--exclude-outbound-port", "80,x"],
            "loom: --exclude-outbound-port 'x': not a number\n",
        ),
        (
            ["--proxy-uid", "1", "--dns-port", "0"],
            "loom: --dns-port 0: a port is a number from 1 to 65535\n",
        ),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(capsys, flags: list[str], message: str) -> None:
    assert main(["connect", "redirect-traffic", "--print", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.err == message
    assert captured.out == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the message a non-root user sees")
def test_applying_without_root_is_one_line(capsys) -> None:
    assert main(["connect", "redirect-traffic", "--proxy-uid", "1"]) == 1
    assert capsys.readouterr().err.startswith("loom: redirect-traffic needs root")
