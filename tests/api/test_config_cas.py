"""``DELETE /v1/config/:kind/:name?cas=N``: Consul's check-and-set delete, so a client that
read an entry cannot delete a newer version of it (the lost update the unconditional delete
allowed). Through py-consul and raw HTTP against a real server."""

from __future__ import annotations

import consul


def _client(server) -> consul.Consul:  # type: ignore[no-untyped-def]
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


ENTRY = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}


def test_a_delete_at_a_stale_index_is_refused_and_the_newer_entry_stays(loom_server) -> None:  # type: ignore[no-untyped-def]
    c = _client(loom_server)
    assert c.config.set("service-defaults", "web", {"Protocol": "http"})
    seen = c.config.get("service-defaults", "web")["ModifyIndex"]
    assert c.config.set("service-defaults", "web", {"Protocol": "grpc"})  # someone else writes
    assert c.config.delete("service-defaults", "web", cas=seen) is False
    now = c.config.get("service-defaults", "web")
    assert now["Protocol"] == "grpc" and now["ModifyIndex"] > seen
    assert c.config.delete("service-defaults", "web", cas=now["ModifyIndex"]) is True
    status, _, _ = loom_server.request("GET", "/v1/config/service-defaults/web")
    assert status == 404


def test_a_cas_delete_of_a_missing_entry_is_false_and_a_plain_delete_stays_idempotent(loom_server) -> None:  # type: ignore[no-untyped-def]
    status, body, _ = loom_server.request("DELETE", "/v1/config/service-defaults/nope?cas=0")
    assert (status, body) == (200, False)
    status, body, _ = loom_server.request("DELETE", "/v1/config/service-defaults/nope?cas=7")
    assert (status, body) == (200, False)
    assert loom_server.request("DELETE", "/v1/config/service-defaults/nope")[0] == 200


def test_a_cas_of_zero_does_not_delete_an_existing_entry(loom_server) -> None:  # type: ignore[no-untyped-def]
    loom_server.put("/v1/config", ENTRY)
    status, body, _ = loom_server.request("DELETE", "/v1/config/service-defaults/web?cas=0")
    assert (status, body) == (200, False)
    assert loom_server.get("/v1/config/service-defaults/web")["Protocol"] == "http"


def test_a_malformed_cas_is_a_400_and_deletes_nothing(loom_server) -> None:  # type: ignore[no-untyped-def]
    loom_server.put("/v1/config", ENTRY)
    status, text, _ = loom_server.request("DELETE", "/v1/config/service-defaults/web?cas=abc")
    assert status == 400 and "cas" in text
    assert loom_server.get("/v1/config/service-defaults/web")["Protocol"] == "http"
