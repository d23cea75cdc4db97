"""The login rate limit: a token bucket per client address for ``POST /v1/acl/login``.

A login checks a bearer token (a JWT, or a service-account token the API server reviews)
and, when it is good, makes an ACL token. Without a limit, anyone who can reach the server
may try tokens as fast as the server answers: ``--acl-login-rate N/s`` with
``--acl-login-burst B`` lets each client address make B attempts at once and N a second
after that; an attempt beyond that is refused before any checking with ``429`` and a
``Retry-After`` saying when the next one is allowed. Every attempt counts, good or bad (an
attacker's are all bad; a client's good ones are few). Clients on a unix socket share one
bucket (they have no address).

The buckets are kept for at most ``max_clients`` addresses: when a new address would pass
that, the longest-idle one is forgotten (its bucket would be full again anyway unless it is
still busy), so a flood of new addresses costs bounded memory. Failed and refused logins are
counted for ``/v1/agent/metrics``.

Pure: the clock is an argument, nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LoginRate:
    """How many login attempts one client address may make."""

    per_second: float = 0.0
    """Attempts a second, sustained; 0: no limit."""
    burst: int = 20
    """Attempts at once (the bucket's size); a client starting many pods at once logs each in."""

    @classmethod
    def parse(cls, text: str, burst: int) -> LoginRate:
        """``--acl-login-rate``: ``N/s``, ``N/m`` or a bare ``N`` (a second); ``ValueError``."""
        number, _, unit = text.strip().partition("/")
        per = {"": 1.0, "s": 1.0, "m": 60.0}.get(unit.strip().lower())
        if per is None:
            raise ValueError(f"{text!r}: the unit is /s or /m")
        rate = float(number)
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"{text!r}: a rate is a number >= 0")
        if burst < 1:
            raise ValueError(f"burst {burst}: at least 1")
        return cls(rate / per, burst)


@dataclass
class _Bucket:
    tokens: float
    at: float


class LoginLimiter:
    """The buckets of every client address, and the login counters."""

    def __init__(
        self, rate: LoginRate, clock: Callable[[], float], max_clients: int = 10_000
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._max = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.failed = 0
        """Logins refused after checking (a bad bearer token, no binding, a bad body)."""
        self.limited = 0
        """Login attempts refused by the rate limit, before any checking."""

    def take(self, client: str) -> float:
        """0 when ``client`` may try a login now (one attempt is counted); else the seconds
        until it may."""
        if self.rate.per_second <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(float(self.rate.burst), now)
            while len(self._buckets) >= self._max:
                self._buckets.popitem(last=False)
        else:
            refill = max(0.0, now - bucket.at) * self.rate.per_second
            bucket.tokens = min(float(self.rate.burst), bucket.tokens + refill)
            bucket.at = now
        self._buckets[client] = bucket  # most recently used last
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        self.limited += 1
        return (1.0 - bucket.tokens) / self.rate.per_second

    @property
    def clients(self) -> int:
        """Addresses with a bucket now."""
        return len(self._buckets)


__all__ = ["LoginLimiter", "LoginRate"]
