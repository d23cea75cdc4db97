"""Counters and the latency histogram of the DNS proxy, as a dict and as Prometheus text.

Plain integer attributes bumped on the packet path (an attribute increment is the cheapest thing
Python does), read by the dataplane's metrics endpoint through ``DnsProxy.metrics()`` /
``metrics_text()``. Pure: observations are passed in, nothing here reads a clock.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Upper bounds of the latency histogram: local answers land in the first, forwards later."""

COUNTERS: dict[str, str] = {
    "queries": "DNS messages received from clients (UDP and TCP)",
    "tcp_queries": "DNS messages received over TCP",
    "local_answers": "queries answered from the name table",
    "autopath_hits": "local answers given by auto-path (CNAME to a known name)",
    "nodata": "local answers without records (known name, other address family)",
    "forwarded": "queries sent to the upstream resolvers (after the cache)",
    "cache_hits": "queries answered from the cache of forwarded answers",
    "coalesced": "queries that joined an identical query already in flight upstream",
    "upstream_queries": "attempts made to upstream resolvers (UDP and TCP)",
    "upstream_failures": "upstream attempts that failed (timeout, network error, bad reply)",
    "servfail": "SERVFAIL answers given (all upstreams failed or overload)",
    "nxdomain": "NXDOMAIN answers given (from upstream or its cache)",
    "formerr": "malformed or unsupported queries answered with an error",
    "dropped": "packets dropped without an answer (no header, or not a query)",
    "truncated": "answers too large for UDP, sent with TC set",
}


class Metrics:
    """The proxy's counters; attribute names are the keys of ``COUNTERS``."""

    def __init__(self) -> None:
        self.queries = 0
        self.tcp_queries = 0
        self.local_answers = 0
        self.autopath_hits = 0
        self.nodata = 0
        self.forwarded = 0
        self.cache_hits = 0
        self.coalesced = 0
        self.upstream_queries = 0
        self.upstream_failures = 0
        self.servfail = 0
        self.nxdomain = 0
        self.formerr = 0
        self.dropped = 0
        self.truncated = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum_s = 0.0
        self.latency_count = 0

    def observe(self, seconds: float) -> None:
        """Record how long one query took from arrival to answer."""
        self.latency_buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds
        self.latency_count += 1

    def observe_quick(self, count: int, total_s: float) -> None:
        """Record ``count`` queries that each took less than the first bucket's bound."""
        self.latency_buckets[0] += count
        self.latency_sum_s += total_s
        self.latency_count += count

    def observe_batch(self, seconds: float, count: int) -> None:
        """Record ``count`` queries that each took ``seconds`` (answered in one batch)."""
        if seconds < LATENCY_BUCKETS_S[0]:
            self.latency_buckets[0] += count
        else:
            self.latency_buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += count
        self.latency_sum_s += seconds * count
        self.latency_count += count

    def as_dict(self) -> dict[str, float]:
        """Flat view: counters, ``latency_seconds_sum/count`` and cumulative buckets."""
        out: dict[str, float] = {name: float(getattr(self, name)) for name in COUNTERS}
        out["latency_seconds_sum"] = self.latency_sum_s
        out["latency_seconds_count"] = float(self.latency_count)
        for bound, count in zip(
            (*LATENCY_BUCKETS_S, float("inf")), self._cumulative(), strict=True
        ):
            out[f"latency_seconds_bucket_le_{_le(bound)}"] = float(count)
        return out

    def text(self, prefix: str = "loom_dns") -> str:
        """Prometheus text exposition (version 0.0.4) of the same numbers."""
        lines: list[str] = []
        for name, help_text in COUNTERS.items():
            metric = f"{prefix}_{name}_total"
            lines += [
                f"# HELP {metric} {help_text}.",
                f"# TYPE {metric} counter",
                f"{metric} {getattr(self, name)}",
            ]
        metric = f"{prefix}_query_duration_seconds"
        lines += [
            f"# HELP {metric} Time from a query's arrival to its answer.",
            f"# TYPE {metric} histogram",
        ]
        for bound, count in zip(
            (*LATENCY_BUCKETS_S, float("inf")), self._cumulative(), strict=True
        ):
            lines.append(f'{metric}_bucket{{le="{_le(bound)}"}} {count}')
        lines += [f"{metric}_sum {self.latency_sum_s!r}", f"{metric}_count {self.latency_count}"]
        return "\n".join(lines) + "\n"

    def _cumulative(self) -> list[int]:
        total = 0
        out = []
        for count in self.latency_buckets:
            total += count
            out.append(total)
        return out


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
