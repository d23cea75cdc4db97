"""The proxy's counters as a dict and as Prometheus text."""

from __future__ import annotations

from typing import Any

from loom.dns.metrics import COUNTERS, Metrics


def test_latencies_land_in_cumulative_buckets_with_sum_and_count() -> None:
    metrics = Metrics()
    metrics.observe(0.00005)
    metrics.observe(0.003)
    metrics.observe(9.0)
    metrics.observe_quick(2, 0.0001)
    flat = metrics.as_dict()
    assert flat["latency_seconds_bucket_le_0.0001"] == 3.0
    assert flat["latency_seconds_bucket_le_0.005"] == 4.0
    assert flat["latency_seconds_bucket_le_5.0"] == 4.0
    assert flat["latency_seconds_bucket_le_+Inf"] == 5.0
    assert flat["latency_seconds_count"] == 5.0
    assert abs(flat["latency_seconds_sum"] - 9.00315) < 1e-9


def test_every_counter_is_exposed_with_help_and_type(golden: Any) -> None:
    metrics = Metrics()
    metrics.queries, metrics.local_answers, metrics.autopath_hits = 10, 7, 2
    metrics.observe(0.0002)
    text = metrics.text()
    for name in COUNTERS:
        assert f"# TYPE loom_dns_{name}_total counter\n" in text
    golden.check("dns/metrics.txt", text)
