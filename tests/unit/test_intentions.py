from __future__ import annotations

import pytest

from loom.domain.entries import IntentionPermission
from loom.domain.intentions import Intention, decide, precedence


@pytest.mark.parametrize(
    ("src_ns", "src", "dst_ns", "dst", "expected"),
    [
        ("default", "web", "default", "db", 9),
        ("default", "*", "default", "db", 8),
        ("*", "*", "default", "db", 7),
        ("default", "web", "default", "*", 6),
        ("default", "*", "default", "*", 5),
        ("*", "*", "default", "*", 4),
        ("default", "web", "*", "*", 3),
        ("default", "*", "*", "*", 2),
        ("*", "*", "*", "*", 1),
    ],
)
def test_precedence_follows_consuls_table(src_ns, src, dst_ns, dst, expected) -> None:
    assert precedence(src_ns, src, dst_ns, dst) == expected


def _i(src: str, dst: str, action: str) -> Intention:
    return Intention("default", src, "default", dst, action)


def test_an_exact_deny_beats_a_wildcard_allow() -> None:
    d = decide(
        [_i("*", "db", "allow"), _i("web", "db", "deny")], "default", "web", "default", "db", True
    )
    assert not d.allowed
    assert d.intention == _i("web", "db", "deny")


def test_an_exact_allow_beats_a_wildcard_deny() -> None:
    rules = [_i("*", "*", "deny"), _i("web", "db", "allow")]
    assert decide(rules, "default", "web", "default", "db", False).allowed
    assert not decide(rules, "default", "api", "default", "db", True).allowed


def test_the_default_policy_decides_when_nothing_matches() -> None:
    assert decide([], "default", "web", "default", "db", True).allowed
    d = decide([_i("api", "db", "allow")], "default", "web", "default", "db", False)
    assert not d.allowed and d.intention is None and "default policy is deny" in d.reason


def test_an_intention_with_l7_permissions_allows_at_l4() -> None:
    perm = Intention("default", "web", "default", "db", "", (IntentionPermission("deny"),))
    assert decide([perm], "default", "web", "default", "db", False).allowed


def test_namespaces_must_match_unless_wildcarded() -> None:
    rule = Intention("team-a", "web", "default", "db", "deny")
    assert decide([rule], "team-b", "web", "default", "db", True).allowed
    assert not decide([rule], "team-a", "web", "default", "db", True).allowed
