"""The log rate limiter: the first lines of a kind per interval, then a count, then one
summary line (pure counting on a clock the test moves, and the logging wrapper)."""

from __future__ import annotations

import logging

import pytest

from loom.ratelog import LogRate, RateLimitedLog, RateSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_burst_of_a_kind_is_written_and_the_rest_counted() -> None:
    clock = Clock()
    rate = LogRate(RateSettings(burst=3, interval_s=10), clock)
    assert [rate.admit("a") for _ in range(5)] == [
        (True, 0), (True, 0), (True, 0), (False, 0), (False, 0),
    ]  # fmt: skip
    assert rate.admit("b") == (True, 0)  # kinds are counted apart
    clock.now += 10
    assert rate.admit("a") == (True, 2)  # the next window opens by reporting the last one


def test_due_reports_windows_that_ended_with_lines_suppressed_and_forgets_them() -> None:
    clock = Clock()
    rate = LogRate(RateSettings(burst=1, interval_s=10), clock)
    for _ in range(4):
        rate.admit("flood")
    rate.admit("quiet")
    assert rate.due() == []  # not over yet
    clock.now += 10
    assert rate.due() == [("flood", 3)]
    assert rate.due() == []
    assert rate.admit("flood") == (True, 0)


def test_kinds_past_the_limit_share_one_window() -> None:
    rate = LogRate(RateSettings(burst=1, interval_s=10), Clock())
    for n in range(256):
        assert rate.admit(f"k{n}") == (True, 0)
    assert rate.admit("new-1") == (True, 0)
    assert rate.admit("new-2") == (False, 0)


def test_the_limited_log_writes_the_burst_and_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limited = RateLimitedLog(
        logging.getLogger("test.ratelog"), LogRate(RateSettings(burst=2, interval_s=60), clock)
    )
    with caplog.at_level(logging.WARNING, "test.ratelog"):
        written = [limited.warning("nack", "line %d", n) for n in range(1000)]
        clock.now += 60
        limited.flush()
    assert written.count(True) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "line 0", "line 1",
        "suppressed 998 similar messages (nack; at most 2 per 60s are written)",
    ]  # fmt: skip


def test_nothing_is_counted_for_a_level_that_is_off(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("test.ratelog.off"), LogRate(clock=Clock()))
    with caplog.at_level(logging.ERROR, "test.ratelog.off"):
        assert limited.warning("k", "not shown") is False
    assert limited.rate.due() == [] and caplog.records == []
