"""The pure KV rules: keys, ?keys&separator, LockDelay and TTL parsing, transaction bodies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.domain.fields import ValidationError
from loom.domain.kv import (
    MAX_KEY_BYTES,
    TxnTooLarge,
    check_key,
    check_ttl,
    keys_under,
    parse_lock_delay,
    parse_session,
    parse_txn,
    parse_uint,
)


def test_keys_with_a_separator_stop_after_the_first_separator_past_the_prefix() -> None:
    keys = ["a/b", "a/c/d", "a/c/e", "a/f/g/h", "b"]
    assert keys_under(keys, "a/", "/") == ["a/b", "a/c/", "a/f/"]
    assert keys_under(keys, "", "/") == ["a/", "b"]
    assert keys_under(keys, "a/", "") == ["a/b", "a/c/d", "a/c/e", "a/f/g/h"]


@given(st.lists(st.text(alphabet="ab/", max_size=6), unique=True), st.text("ab/", max_size=2))
def test_separated_keys_are_prefixes_of_the_keys_and_cover_them(keys: list[str], pre: str) -> None:
    keys.sort()
    out = keys_under(keys, pre, "/")
    assert len(out) == len(set(out))
    for key in keys:
        if key.startswith(pre):
            assert any(key.startswith(k) for k in out)
    for k in out:
        assert k.startswith(pre) and any(key.startswith(k) for key in keys)


@pytest.mark.parametrize(
    ("key", "error"),
    [("", "Missing key name"), ("a\x00b", "NUL"), ("\udcff", "UTF-8"),
     ("x" * (MAX_KEY_BYTES + 1), "longer than")],
)  # fmt: skip
def test_unsafe_keys_are_refused(key: str, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        check_key(key)


def test_lock_delay_reads_durations_seconds_and_nanoseconds_as_consul_does() -> None:
    assert parse_lock_delay(None) == 15_000_000_000
    assert parse_lock_delay("1s") == 1_000_000_000
    assert parse_lock_delay(5) == 5_000_000_000  # under 1000: seconds
    assert parse_lock_delay(2_000_000_000) == 2_000_000_000  # nanoseconds
    assert parse_lock_delay("10m") == 60_000_000_000  # capped at 60 s


def test_session_ttls_outside_10s_to_24h_are_refused() -> None:
    assert check_ttl("10s") == "10s" and check_ttl("86400s") == "86400s" and check_ttl("0s") == ""
    for bad in ("9s", "86401s", "forever"):
        with pytest.raises(ValidationError):
            check_ttl(bad)


def test_a_session_body_in_py_consul_spelling_is_read() -> None:
    s = parse_session({"name": "n", "lockdelay": "3s", "ttl": "30s", "behavior": "delete"}, "me")
    assert (s.name, s.lock_delay_ns, s.ttl, s.behavior, s.node) == (
        "n", 3_000_000_000, "30s", "delete", "me",
    )  # fmt: skip


def test_query_integers_are_unsigned_64_bit() -> None:
    assert parse_uint("18446744073709551615", "cas") == (1 << 64) - 1
    for bad in ("-1", "18446744073709551616", "1e3", ""):
        with pytest.raises(ValidationError):
            parse_uint(bad, "cas")


def test_transactions_are_bounded_and_strict() -> None:
    with pytest.raises(TxnTooLarge):
        parse_txn([{"KV": {"Verb": "get", "Key": "k"}}] * 65)
    with pytest.raises(ValidationError, match="Verb"):
        parse_txn([{"KV": {"Verb": "explode", "Key": "k"}}])
    with pytest.raises(ValidationError, match="base64"):
        parse_txn([{"KV": {"Verb": "set", "Key": "k", "Value": "!!"}}])
    with pytest.raises(ValidationError, match="Missing key"):
        parse_txn([{"KV": {"Verb": "set", "Key": ""}}])
    [tree] = parse_txn([{"KV": {"Verb": "delete-tree", "Key": ""}}])
    assert tree.key == "" and not tree.reads_only
