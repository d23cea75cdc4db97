"""The one address parser: every form a flag or env var may take, and the refusals."""

from __future__ import annotations

import pytest

from loom.addrs import Address, AddressError, parse_address


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8500", Address("127.0.0.1", 8500)),
    (":8500", Address("0.0.0.0", 8500)),
    ("[::1]:8502", Address("::1", 8502)),
    ("loom-server:8500", Address("loom-server", 8500)),
    ("unix:/run/loom/http.sock", Address(path="/run/loom/http.sock")),
    ("unix:///run/loom/http.sock", Address(path="/run/loom/http.sock")),
    ("/run/loom/http.sock", Address(path="/run/loom/http.sock")),
    ("http://loom-server:8500/", Address("loom-server", 8500, scheme="http")),
    ("https://loom-server:8501", Address("loom-server", 8501, scheme="https")),
    ("https://loom-server", Address("loom-server", 443, scheme="https")),
    ("http://127.0.0.1", Address("127.0.0.1", 80, scheme="http")),
])
def test_addresses_come_in_tcp_unix_and_url_forms(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("10.96.0.10", Address("10.96.0.10", 53)),
    ("fd00::53", Address("fd00::53", 53)),
    ("[fd00::53]", Address("fd00::53", 53)),
    ("[::1]:5353", Address("::1", 5353)),
    ("https://loom", Address("loom", 53, scheme="https")),
])
def test_a_default_port_fills_in_for_an_address_without_one(text: str, expected: Address) -> None:
    assert parse_address(text, default_port=53) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("127.0.0.1", "is not HOST:PORT or unix:PATH"),
    ("127.0.0.1:99999", "no valid port"),
    ("host:x", "no valid port"),
    ("host:\u00b2", "no valid port"),
    ("[::1]5353", "expected [IPV6]:PORT"),
    ("[::1", "unclosed"),
    ("unix:", "empty socket path"),
])
def test_bad_addresses_are_one_line_naming_the_flag(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text, "--http-addr")
    assert str(caught.value).startswith(f"--http-addr: {text!r} ")
    assert reason in str(caught.value)


def test_a_unix_socket_is_refused_where_only_tcp_makes_sense() -> None:
    with pytest.raises(AddressError, match="--listen: 'unix:/x' is a unix socket"):
        parse_address("unix:/x", "--listen", unix=False)


@pytest.mark.parametrize(("addr", "text", "url"), [
    (Address("127.0.0.1", 8500), "127.0.0.1:8500", "http://127.0.0.1:8500"),
    (Address("::1", 8500), "[::1]:8500", "http://[::1]:8500"),
    (Address("h", 8501, scheme="https"), "h:8501", "https://h:8501"),
    (Address(path="/s.sock"), "unix:/s.sock", "http://localhost"),
])
def test_an_address_prints_as_it_is_written(addr: Address, text: str, url: str) -> None:
    assert (str(addr), addr.url()) == (text, url)
