"""The pure rule builder: golden rule sets and one-line validation errors."""

from __future__ import annotations

import pytest

from loom.redirect import RedirectConfig, RedirectConfigError, redirect_rules
from loom.redirect.rules import JUMP_DNS_UDP, JUMP_INBOUND, JUMP_OUTPUT

CASES = {
    "defaults": RedirectConfig(proxy_uid=5995),
    "every_exclusion": RedirectConfig(
        proxy_uid=5995,
        exclude_inbound_ports=(9090, 22, 22),
        exclude_outbound_ports=(5432, 443),
        exclude_outbound_cidrs=("10.96.0.0/12", "192.168.1.7", "fd00::/8", "10.0.0.9/8"),
        exclude_uids=(1001, 0),
    ),
    "dns_port": RedirectConfig(proxy_uid=5995, dns_port=15053),
    "exclude_uids_with_dns": RedirectConfig(
        proxy_uid=101, exclude_uids=(5996, 5995, 101), dns_port=8600
    ),
    "custom_ports": RedirectConfig(
        proxy_uid=0, proxy_inbound_port=21000, proxy_outbound_port=15002
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("family", [4, 6])
def test_the_rule_set_matches_its_golden_file(golden, case: str, family: int) -> None:
    golden.check(f"redirect/{case}.v{family}.rules", redirect_rules(CASES[case], family).render())


def test_the_same_config_always_renders_the_same_text() -> None:
    a = RedirectConfig(proxy_uid=1, exclude_outbound_ports=(3, 1, 2), exclude_uids=(9, 8))
    b = RedirectConfig(proxy_uid=1, exclude_outbound_ports=(2, 3, 1, 1), exclude_uids=(8, 9))
    assert redirect_rules(a).render() == redirect_rules(b).render()


def test_ipv4_cidrs_go_to_iptables_and_ipv6_cidrs_to_ip6tables() -> None:
    config = RedirectConfig(proxy_uid=1, exclude_outbound_cidrs=("10.0.0.0/8", "fd00::/8"))
    v4 = redirect_rules(config, 4).render()
    v6 = redirect_rules(config, 6).render()
    assert "-d 10.0.0.0/8 -j RETURN" in v4 and "fd00::/8" not in v4
    assert "-d fd00::/8 -j RETURN" in v6 and "10.0.0.0/8" not in v6


def test_the_dns_jump_is_wanted_only_with_a_dns_port() -> None:
    assert redirect_rules(RedirectConfig(proxy_uid=1)).jumps == (JUMP_INBOUND, JUMP_OUTPUT)
    with_dns = redirect_rules(RedirectConfig(proxy_uid=1, dns_port=15053))
    assert with_dns.jumps == (JUMP_INBOUND, JUMP_DNS_UDP, JUMP_OUTPUT)


def test_restore_input_skips_present_jumps_and_deletes_stale_ones() -> None:
    ruleset = redirect_rules(RedirectConfig(proxy_uid=1))
    text = ruleset.restore_input(
        present=frozenset({JUMP_OUTPUT, JUMP_DNS_UDP}), stale=(JUMP_DNS_UDP,)
    )
    assert "-A OUTPUT -p tcp -j CONSUL_PROXY_OUTPUT" not in text
    assert "-A PREROUTING -p tcp -j CONSUL_PROXY_INBOUND" in text
    assert "-D OUTPUT -p udp -m udp --dport 53 -j CONSUL_DNS_REDIRECT" in text
    assert text.index("-D OUTPUT") < text.index("-A PREROUTING")


def test_the_proxy_uid_returns_before_anything_is_redirected() -> None:
    rules = redirect_rules(RedirectConfig(proxy_uid=77, dns_port=53)).rules
    output = [r for r in rules if r[0] == "CONSUL_PROXY_OUTPUT"]
    dns = [r for r in rules if r[0] == "CONSUL_DNS_REDIRECT"]
    assert output[1] == ("CONSUL_PROXY_OUTPUT", "-m", "owner", "--uid-owner", "77", "-j", "RETURN")
    assert dns[0] == ("CONSUL_DNS_REDIRECT", "-m", "owner", "--uid-owner", "77", "-j", "RETURN")
    assert output[-1][-1] == "CONSUL_PROXY_REDIRECT"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"proxy_inbound_port": 0}, "--proxy-inbound-port 0: a port is a number from 1 to 65535"),
        ({"proxy_outbound_port": 65536}, "--proxy-outbound-port 65536: a port"),
        ({"exclude_inbound_ports": (22, -1)}, "--exclude-inbound-port -1: a port"),
        ({"exclude_outbound_ports": (True,)}, "--exclude-outbound-port True: a port"),
        ({"dns_port": 99999}, "--dns-port 99999: a port"),
        ({"exclude_uids": (-3,)}, "--exclude-uid -3: a UID is a number"),
        ({"exclude_outbound_cidrs": ("10.0.0.0/33",)}, "--exclude-outbound-cidr '10.0.0.0/33'"),
        ({"exclude_outbound_cidrs": ("cluster",)}, "not an IPv4/IPv6 address or CIDR"),
        ({"proxy_inbound_port": 15001}, "both 15001: the proxy needs two listeners"),
    ],
)
def test_a_bad_value_is_refused_with_a_one_line_message(kwargs: dict, message: str) -> None:
    with pytest.raises(RedirectConfigError) as info:
        RedirectConfig(proxy_uid=5995, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_an_unknown_family_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        redirect_rules(RedirectConfig(proxy_uid=1), 5)
