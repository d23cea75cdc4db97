"""The webhook's counters and latency histogram, rendered as Prometheus text.

Kept apart from the server so the handler only records (``observe``) and ``/metrics`` only
renders. Single-threaded (one asyncio loop): plain integers, no locks.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Latency histogram upper bounds, seconds."""

OUTCOMES = ("injected", "skipped", "refused", "malformed", "error")
"""Every review ends in exactly one of these."""


@dataclass
class WebhookMetrics:
    """Counts per outcome, latency histogram, certificate reloads."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    bucket_hits: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    """Reviews by the first bucket they fall in (the last: above every bound); the histogram's
    cumulative counts are their running sums (``bucket_counts``)."""
    latency_sum: float = 0.0
    cert_reloads: int = 0

    def observe(self, outcome: str, seconds: float) -> None:
        """Record one review's outcome and handling time."""
        self.outcomes[outcome] += 1
        self.latency_sum += seconds
        self.bucket_hits[bisect_left(BUCKETS, seconds)] += 1  # the first bound >= seconds

    @property
    def bucket_counts(self) -> list[int]:
        """Reviews answered within each of ``BUCKETS``, cumulative as Prometheus has them."""
        return list(accumulate(self.bucket_hits[: len(BUCKETS)]))

    @property
    def reviews(self) -> int:
        return sum(self.outcomes.values())

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines = [
            "# HELP loom_webhook_reviews_total AdmissionReviews received.",
            "# TYPE loom_webhook_reviews_total counter",
            f"loom_webhook_reviews_total {self.reviews}",
            "# HELP loom_webhook_injected_total Pods injected.",
            "# TYPE loom_webhook_injected_total counter",
            f"loom_webhook_injected_total {self.outcomes['injected']}",
            "# HELP loom_webhook_refused_total Pods refused (allowed: false).",
            "# TYPE loom_webhook_refused_total counter",
            f"loom_webhook_refused_total {self.outcomes['refused']}",
            "# HELP loom_webhook_errors_total Malformed reviews (HTTP 400) and internal errors.",
            "# TYPE loom_webhook_errors_total counter",
            f"loom_webhook_errors_total {self.outcomes['malformed'] + self.outcomes['error']}",
            "# HELP loom_webhook_outcomes_total Reviews by outcome.",
            "# TYPE loom_webhook_outcomes_total counter",
        ]
        lines += [
            f'loom_webhook_outcomes_total{{outcome="{name}"}} {count}'
            for name, count in self.outcomes.items()
        ]
        lines += [
            "# HELP loom_webhook_review_duration_seconds Time to answer one review.",
            "# TYPE loom_webhook_review_duration_seconds histogram",
        ]
        lines += [
            f'loom_webhook_review_duration_seconds_bucket{{le="{bound}"}} {count}'
            for bound, count in zip(BUCKETS, self.bucket_counts, strict=True)
        ]
        lines += [
            f'loom_webhook_review_duration_seconds_bucket{{le="+Inf"}} {self.reviews}',
            f"loom_webhook_review_duration_seconds_sum {self.latency_sum:.6f}",
            f"loom_webhook_review_duration_seconds_count {self.reviews}",
            "# HELP loom_webhook_cert_reloads_total TLS certificate reloads.",
            "# TYPE loom_webhook_cert_reloads_total counter",
            f"loom_webhook_cert_reloads_total {self.cert_reloads}",
        ]
        return "\n".join(lines) + "\n"
