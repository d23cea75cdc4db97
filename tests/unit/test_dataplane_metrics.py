"""Merging the dataplane's metrics: each source's text in order, and which ones answered."""

from __future__ import annotations

import pytest

from loom.addrs import Address
from loom.dataplane.errors import DataplaneError
from loom.dataplane.metrics import Scraped, agent_metrics, merge_metrics, parse_metrics_url


def test_sources_are_concatenated_in_order_and_their_up_gauges_follow() -> None:
    text = merge_metrics([
        Scraped("envoy", "# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"),
        Scraped("agent", "loom_dataplane_envoy_ready 1"),
        Scraped("app", "app_requests_total 7\n"),
    ])  # fmt: skip
    assert text.splitlines() == [
        "# TYPE envoy_server_live gauge",
        "envoy_server_live 1",
        "loom_dataplane_envoy_ready 1",
        "app_requests_total 7",
        "# HELP loom_dataplane_metrics_source_up Whether a source of the merged metrics "
        "answered this scrape.",
        "# TYPE loom_dataplane_metrics_source_up gauge",
        'loom_dataplane_metrics_source_up{source="envoy"} 1',
        'loom_dataplane_metrics_source_up{source="agent"} 1',
        'loom_dataplane_metrics_source_up{source="app"} 1',
    ]


def test_a_source_that_did_not_answer_is_left_out_and_reported_down() -> None:
    text = merge_metrics([Scraped("envoy", "envoy_server_live 1\n"), Scraped("app", None)])
    assert "app_" not in text
    assert 'loom_dataplane_metrics_source_up{source="app"} 0\n' in text
    assert 'loom_dataplane_metrics_source_up{source="envoy"} 1\n' in text


def test_the_agents_own_metrics_name_the_proxy_with_escaped_labels() -> None:
    text = agent_metrics('we"b', "web", False, "loom_dns_queries_total 3\n")
    assert 'loom_dataplane_info{proxy_id="we\\"b",service="web"} 1' in text
    assert "loom_dataplane_envoy_ready 0\n" in text
    assert text.endswith("loom_dns_queries_total 3\n")


def test_the_apps_metrics_url_is_plain_http_with_a_port() -> None:
    assert parse_metrics_url("http://127.0.0.1:9102/metrics") == (
        Address("127.0.0.1", 9102),
        "/metrics",
    )
    assert parse_metrics_url("http://localhost:8080/stats?format=prom") == (
        Address("localhost", 8080),
        "/stats?format=prom",
    )
    for bad in ("https://127.0.0.1:9102/metrics", "http://127.0.0.1/metrics", "127.0.0.1:1"):
        with pytest.raises(DataplaneError, match="--service-metrics-url"):
            parse_metrics_url(bad)
