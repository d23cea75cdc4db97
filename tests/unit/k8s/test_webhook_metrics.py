"""The webhook's latency histogram: cumulative counts per bound, as Prometheus reads them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from loom.k8s.metrics import BUCKETS, WebhookMetrics


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.sampled_from([0.0, *BUCKETS, 2.0]) | st.floats(0, 3), max_size=30))
def test_each_bucket_counts_the_reviews_answered_within_its_bound(durations: list[float]) -> None:
    metrics = WebhookMetrics()
    for seconds in durations:
        metrics.observe("injected", seconds)
    assert metrics.bucket_counts == [sum(s <= b for s in durations) for b in BUCKETS]
    text = metrics.render()
    for bound, count in zip(BUCKETS, metrics.bucket_counts, strict=True):
        assert f'loom_webhook_review_duration_seconds_bucket{{le="{bound}"}} {count}\n' in text
    assert f'le="+Inf"}} {len(durations)}\n' in text
