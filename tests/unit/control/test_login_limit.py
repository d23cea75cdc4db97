"""The login rate limit's token buckets, on a clock the test moves: a burst, then a refusal
saying how long to wait; refill; one bucket per address; bounded memory under a flood of
addresses; no limit at 0; the flag's syntax."""

from __future__ import annotations

import pytest

from loom.control.loginlimit import LoginLimiter, LoginRate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_burst_then_waits_for_the_rate() -> None:
    clock = Clock()
    limiter = LoginLimiter(LoginRate(2.0, 3), clock)
    assert [limiter.take("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("10.0.0.1") == pytest.approx(0.5)
    assert limiter.limited == 1
    clock.now += 0.5
    assert limiter.take("10.0.0.1") == 0.0
    assert limiter.take("10.0.0.1") == pytest.approx(0.5)
    clock.now += 60  # a long pause refills to the burst, no more
    assert [limiter.take("10.0.0.1") for _ in range(4)][-1] > 0


def test_each_address_has_its_own_bucket() -> None:
    limiter = LoginLimiter(LoginRate(1.0, 1), Clock())
    assert limiter.take("10.0.0.1") == 0.0
    assert limiter.take("10.0.0.1") > 0
    assert limiter.take("10.0.0.2") == 0.0
    assert limiter.take("unix") == 0.0


def test_a_flood_of_new_addresses_keeps_a_bounded_number_of_buckets() -> None:
    limiter = LoginLimiter(LoginRate(1.0, 1), Clock(), max_clients=100)
    for i in range(10_000):
        limiter.take(f"fd00::{i:x}")
    assert limiter.clients == 100


def test_a_rate_of_zero_is_no_limit() -> None:
    limiter = LoginLimiter(LoginRate(0.0, 1), Clock())
    assert all(limiter.take("10.0.0.1") == 0.0 for _ in range(1000))
    assert limiter.clients == 0


@pytest.mark.parametrize(
    ("text", "per_second"), [("10/s", 10.0), ("120/m", 2.0), ("5", 5.0), ("0", 0.0)]
)
def test_the_rate_flag_reads_per_second_and_per_minute(text: str, per_second: float) -> None:
    assert LoginRate.parse(text, 4) == LoginRate(per_second, 4)


@pytest.mark.parametrize(("text", "burst"), [("1/h", 1), ("-1/s", 1), ("nan", 1), ("1/s", 0)])
def test_a_bad_rate_or_burst_is_refused(text: str, burst: int) -> None:
    with pytest.raises(ValueError):
        LoginRate.parse(text, burst)
