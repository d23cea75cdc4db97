"""The sidecar bootstrap carries the ACL token to the xDS stream, and is written private."""

from __future__ import annotations

import stat
from pathlib import Path

from loom.addrs import parse_address
from loom.dataplane.agent import write_private
from loom.dataplane.bootstrap import build_bootstrap


def _grpc_service(doc: dict) -> dict:  # type: ignore[type-arg]
    return dict(doc["dynamic_resources"]["ads_config"]["grpc_services"][0])


def test_a_token_is_sent_as_x_consul_token_metadata_on_the_ads_stream() -> None:
    doc = build_bootstrap("web-sidecar-proxy", "web", "default", parse_address("127.0.0.1:8502"),
                          token="s3cret", sds_socket="/w/sds.sock")  # fmt: skip
    assert _grpc_service(doc)["initial_metadata"] == [{"key": "x-consul-token", "value": "s3cret"}]


def test_without_a_token_the_stream_carries_no_metadata() -> None:
    doc = build_bootstrap("web-sidecar-proxy", "web", "default", parse_address("127.0.0.1:8502"),
                          sds_socket="/w/sds.sock")  # fmt: skip
    assert "initial_metadata" not in _grpc_service(doc)


def test_a_private_file_is_owner_only_even_when_it_replaces_a_wider_one(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
