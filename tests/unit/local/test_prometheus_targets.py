"""The local Prometheus's files: file_sd targets from pod records, its config, its settings."""

from __future__ import annotations

import json
from pathlib import Path

from loom.local import prometheus
from loom.local.mesh import LocalSettings
from loom.local.netns import LocalNetSettings


def settings(tmp_path: Path) -> LocalSettings:
    return LocalSettings(net=LocalNetSettings(state_dir=tmp_path))


def test_only_pods_whose_record_names_a_metrics_target_are_targets_labelled_with_their_pod() -> (
    None
):
    records = [
        {"name": "web-1", "metrics": {"target": "10.244.0.3:20200", "path": "/metrics",
                                      "service": "web"}},
        {"name": "plain"},
        {"name": "api-0", "metrics": {"target": "10.244.0.2:20300", "path": "/m",
                                      "service": "api"}},
    ]  # fmt: skip
    assert prometheus.targets(records) == [
        {"targets": ["10.244.0.2:20300"],
         "labels": {"pod": "api-0", "__metrics_path__": "/m"}},
        {"targets": ["10.244.0.3:20200"],
         "labels": {"pod": "web-1", "__metrics_path__": "/metrics"}},
    ]  # fmt: skip


def test_the_config_scrapes_the_targets_file_of_the_state_directory(tmp_path: Path) -> None:
    s = settings(tmp_path)
    config = json.loads(prometheus.config_text(s))
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "prometheus" / "targets.json")]


def test_targets_are_written_only_while_a_prometheus_is_recorded(tmp_path: Path) -> None:
    s = settings(tmp_path)
    rec = {"name": "a", "metrics": {"target": "10.244.0.2:20200", "path": "/metrics",
                                    "service": "a"}}  # fmt: skip
    prometheus.write_targets(s, [rec])
    assert not prometheus.targets_file(s).exists()
    assert prometheus.scraped_settings(s) is s
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus.json").write_text("{}")
    prometheus.write_targets(s, [rec])
    assert json.loads(prometheus.targets_file(s).read_text())[0]["targets"] == ["10.244.0.2:20200"]
    assert prometheus.scraped_settings(s).inject.metrics.enabled
    assert not s.inject.metrics.enabled
