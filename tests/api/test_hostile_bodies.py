"""Request bodies that are valid JSON but not storable text are the caller's fault: 400 naming
the place, nothing written, and the server keeps accepting good writes (issue 11)."""

from __future__ import annotations

from typing import Any


def test_a_lone_surrogate_in_a_check_id_is_a_400_naming_it_and_later_writes_succeed(
    loom_server: Any,
) -> None:
    body = b'{"Name": "web", "Port": 8080, "Check": {"CheckID": "\\ud800", "TTL": "10s"}}'
    for _ in range(3):
        status, text, _ = loom_server.request("PUT", "/v1/agent/service/register", body)
        assert status == 400
        assert text == "Invalid request: body.Check.CheckID: contains a lone UTF-16 surrogate, which is not text\n"
    assert loom_server.get("/v1/agent/services") == {}
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 8080})
    assert list(loom_server.get("/v1/agent/services")) == ["web"]


def test_a_lone_surrogate_in_a_key_is_refused_too(loom_server: Any) -> None:
    body = b'{"Name": "web", "Meta": {"\\udfff": "x"}}'
    status, text, _ = loom_server.request("PUT", "/v1/agent/service/register", body)
    assert (status, text) == (
        400, "Invalid request: body.Meta: a key contains a lone UTF-16 surrogate, which is not text\n"
    )  # fmt: skip


def test_deeply_nested_json_is_a_400_not_a_500(loom_server: Any) -> None:
    for depth in (100, 100_000):  # past the limit; past the interpreter's recursion limit
        body = b'{"Name": "web", "Meta": ' + b"[" * depth + b"]" * depth + b"}"
        status, text, _ = loom_server.request("PUT", "/v1/agent/service/register", body)
        assert status == 400, (depth, text)
        assert "nested deeper than 64 levels" in text
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 8080})
    assert list(loom_server.get("/v1/agent/services")) == ["web"]


def test_a_leaf_for_a_namespace_that_is_not_a_dns_label_is_a_400_and_mints_nothing(
    loom_server: Any,
) -> None:
    for ns, shown in (("a/b", "'a/b'"), ("%C3%A9", "'é'"), ("..", "'..'"), ("A", "'A'")):
        status, text, _ = loom_server.request("GET", f"/v1/agent/connect/ca/leaf/probe?ns={ns}")
        assert (status, text) == (
            400, f"Invalid request: ns: {shown} is not a valid namespace (a DNS label)\n"
        ), ns  # fmt: skip
    leaf = loom_server.get("/v1/agent/connect/ca/leaf/probe?ns=team-a")
    assert leaf["ServiceURI"].endswith("/ns/team-a/dc/dc1/svc/probe")
