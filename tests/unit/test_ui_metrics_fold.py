"""The UI metrics endpoint's pure half: Prometheus answers folded into services and edges."""

from __future__ import annotations

import pytest

from loom.server.metrics_http import QUERIES, MetricsProviderError, fold, parse_vector


def answer(*rows: tuple[dict[str, str], str]) -> dict[str, object]:
    result = [{"metric": m, "value": [1700000000.0, v]} for m, v in rows]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_an_instant_vector_is_read_and_nan_samples_are_left_out() -> None:
    body = answer(({"service": "web"}, "2.5"), ({"service": "api"}, "NaN"))
    assert parse_vector(body) == [({"service": "web"}, 2.5)]


@pytest.mark.parametrize(
    "body",
    [{"status": "error", "error": "parse error"}, {"status": "success", "data": {}}, "html"],
)
def test_an_answer_that_is_not_a_vector_is_a_provider_error(body: object) -> None:
    with pytest.raises(MetricsProviderError):
        parse_vector(body)


def test_services_get_rate_error_share_and_p99_and_only_edges_with_traffic_are_kept() -> None:
    edge = {"service": "web", "envoy_cluster_name": "api"}
    idle = {"service": "web", "envoy_cluster_name": "db"}
    doc = fold({
        "service_rate": [({"service": "api"}, 4.0), ({"service": "db"}, 0.0)],
        "service_errors": [({"service": "api"}, 1.0)],
        "service_p99": [({"service": "api"}, 12.5)],
        "edge_rate": [(edge, 4.0), (idle, 0.0)],
        "edge_errors": [],
        "edge_p99": [],
    })  # fmt: skip
    assert doc["Services"] == {
        "api": {"RequestRate": 4.0, "ErrorRate": 0.25, "P99Ms": 12.5},
        "db": {"RequestRate": 0.0, "ErrorRate": 0.0, "P99Ms": None},
    }
    assert doc["Edges"] == [
        {"Source": "web", "Destination": "api", "RequestRate": 4.0, "ErrorRate": 0.0,
         "P99Ms": None},
    ]  # fmt: skip


def test_every_query_joins_each_sidecars_service_label_from_its_dataplane_info() -> None:
    assert set(QUERIES) == {
        "service_rate", "service_errors", "service_p99", "edge_rate", "edge_errors", "edge_p99",
    }  # fmt: skip
    for promql in QUERIES.values():
        assert "group_left(service) loom_dataplane_info" in promql
        assert "{" in promql and "$" not in promql
