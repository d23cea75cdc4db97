"""``RedirectConfig`` and its flags: one value, rendered and parsed back without loss."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.redirect import RedirectConfig, RedirectConfigError
from loom.redirect.config import MAX_UID

ports = st.integers(1, 65535)
uids = st.integers(0, MAX_UID)


@st.composite
def cidrs(draw: st.DrawFn) -> str:
    """An address or network as someone may write it: host bits set or not, no prefix or one."""
    address = draw(st.ip_addresses())
    width = 32 if isinstance(address, ipaddress.IPv4Address) else 128
    prefix = draw(st.none() | st.integers(0, width))
    return str(address) if prefix is None else f"{address}/{prefix}"


@st.composite
def configs(draw: st.DrawFn) -> RedirectConfig:
    inbound = draw(ports)
    outbound = draw(ports.filter(lambda p: p != inbound))
    return RedirectConfig(
        proxy_uid=draw(uids),
        proxy_inbound_port=inbound,
        proxy_outbound_port=outbound,
        exclude_inbound_ports=tuple(draw(st.lists(ports, max_size=5))),
        exclude_outbound_ports=tuple(draw(st.lists(ports, max_size=5))),
        exclude_outbound_cidrs=tuple(draw(st.lists(cidrs(), max_size=5))),
        exclude_uids=tuple(draw(st.lists(uids, max_size=5))),
        dns_port=draw(st.none() | ports),
    )


@settings(max_examples=300, deadline=None)
@given(configs())
def test_from_flags_parses_back_exactly_the_config_to_flags_rendered(
    config: RedirectConfig,
) -> None:
    flags = config.to_flags()
    assert RedirectConfig.from_flags(flags) == config
    # Every flag is one `--name=value` word, so the list survives a container's args as is.
    assert all(flag.startswith("--") and "=" in flag for flag in flags)


def test_the_defaults_render_the_proxy_and_its_two_ports_only() -> None:
    assert RedirectConfig(proxy_uid=5995).to_flags() == [
        "--proxy-uid=5995",
        "--proxy-inbound-port=20000",
        "--proxy-outbound-port=15001",
    ]
    assert RedirectConfig.from_flags(["--proxy-uid=5995"]) == RedirectConfig(proxy_uid=5995)


def test_values_may_follow_their_flag_and_lists_may_be_comma_separated() -> None:
    config = RedirectConfig.from_flags(
        ["--proxy-uid", "7", "--exclude-inbound-port", "22, 9090", "--exclude-inbound-port=80",
         "--exclude-outbound-cidr=10.0.0.0/8,fd00::/8", "--dns-port", "15053"]
    )  # fmt: skip
    assert config == RedirectConfig(
        proxy_uid=7,
        exclude_inbound_ports=(22, 9090, 80),
        exclude_outbound_cidrs=("10.0.0.0/8", "fd00::/8"),
        dns_port=15053,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "--proxy-uid is required: the UID the proxy runs as"),
        (["--proxy-uid=1", "--netns=pod"], "redirect flags: unrecognized arguments: --netns=pod"),
        (["--proxy-uid=1", "--proxy-in=2"], "unrecognized arguments: --proxy-in=2"),
        (["--proxy-uid"], "redirect flags: argument --proxy-uid: expected one argument"),
        (["--proxy-uid=1", "stray"], "unrecognized arguments: stray"),
        (["--proxy-uid=x"], "--proxy-uid 'x': not a number"),
        (["--proxy-uid=1", "--exclude-uid=4294967295"], "--exclude-uid 4294967295: a UID is"),
        (["--proxy-uid=1", "--exclude-outbound-cidr=10.0.0.0/33"], "not an IPv4/IPv6 address"),
        (["--proxy-uid=1", "--proxy-outbound-port=20000"], "the proxy needs two listeners"),
    ],
)
def test_anything_but_a_valid_config_is_one_line_naming_the_flag(
    flags: list[str], message: str
) -> None:
    with pytest.raises(RedirectConfigError) as info:
        RedirectConfig.from_flags(flags)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_a_refusal_says_which_field_and_what_is_wrong_without_naming_a_flag() -> None:
    with pytest.raises(RedirectConfigError) as info:
        RedirectConfig(proxy_uid=1, exclude_outbound_cidrs=("10.0.0.0/8", " 10.1.0.0/16"))
    assert info.value.field == "exclude_outbound_cidrs"
    assert info.value.why == "' 10.1.0.0/16' is not an IP address or CIDR"
    with pytest.raises(RedirectConfigError) as info:
        RedirectConfig(proxy_uid=1, exclude_inbound_ports=(0,))
    assert (info.value.field, info.value.why) == (
        "exclude_inbound_ports",
        "0 is not a port number (1-65535)",
    )
