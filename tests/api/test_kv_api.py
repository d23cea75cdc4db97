"""Consul's KV, session and transaction API against a real `loom server` (raw HTTP).

The behaviours are Consul's (its API docs and ``agent/kvs_endpoint_test.go``,
``api/kv_test.go``, ``api/txn_test.go``, ``api/session_test.go``): Value in base64, 404 with
``X-Consul-Index`` for a missing key, ``true``/``false`` answers of writes, ``?cas=0`` only
when absent, locks with sessions, 409 with ``Errors`` for a failed transaction.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProcess, start_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = start_server()
    try:
        yield s
    finally:
        s.stop()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def put(server: ServerProcess, path: str, body: bytes = b"") -> Any:
    status, out, _ = server.request("PUT", path, body)
    assert status == 200, (path, status, out)
    return out


def test_a_value_put_is_read_back_in_base64_with_its_flags_and_indexes(
    server: ServerProcess,
) -> None:
    assert put(server, "/v1/kv/api/one?flags=42", b"hello") is True
    status, [entry], headers = server.request("GET", "/v1/kv/api/one")
    assert status == 200
    assert entry["Key"] == "api/one" and entry["Flags"] == 42 and entry["LockIndex"] == 0
    assert base64.b64decode(entry["Value"]) == b"hello"
    assert entry["CreateIndex"] == entry["ModifyIndex"] == int(headers["X-Consul-Index"])
    assert "Session" not in entry
    put(server, "/v1/kv/api/one", b"again")
    [after] = server.get("/v1/kv/api/one")
    assert after["CreateIndex"] == entry["CreateIndex"] < after["ModifyIndex"]
    assert after["Flags"] == 0  # a PUT without ?flags writes 0, as Consul's does


def test_raw_answers_the_bytes_and_an_empty_body_is_a_null_value(server: ServerProcess) -> None:
    put(server, "/v1/kv/api/raw", b"\x00\x01binary")
    status, _, headers = server.request("GET", "/v1/kv/api/raw?raw")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    put(server, "/v1/kv/api/empty")
    assert server.get("/v1/kv/api/empty")[0]["Value"] is None


def test_a_missing_key_is_a_404_with_the_index(server: ServerProcess) -> None:
    status, body, headers = server.request("GET", "/v1/kv/api/nothing-here")
    assert status == 404 and body is None and int(headers["X-Consul-Index"]) >= 1


def test_recurse_keys_and_separator_list_a_prefix(server: ServerProcess) -> None:
    for key in ("tree/a", "tree/b/c", "tree/b/d", "tree/e/f/g", "treeless"):
        put(server, f"/v1/kv/{key}", b"v")
    found = [e["Key"] for e in server.get("/v1/kv/tree/?recurse")]
    assert found == ["tree/a", "tree/b/c", "tree/b/d", "tree/e/f/g"]
    assert server.get("/v1/kv/tree/?keys") == found
    assert server.get("/v1/kv/tree/?keys&separator=/") == ["tree/a", "tree/b/", "tree/e/"]
    assert server.get("/v1/kv/tree?keys&separator=/") == ["tree/", "treeless"]
    assert server.request("GET", "/v1/kv/none/?recurse")[0] == 404
    assert server.request("GET", "/v1/kv/none/?keys")[0] == 404


def test_cas_zero_writes_only_a_new_key_and_cas_n_only_that_version(
    server: ServerProcess,
) -> None:
    assert put(server, "/v1/kv/api/cas?cas=0", b"first") is True
    assert put(server, "/v1/kv/api/cas?cas=0", b"second") is False
    [entry] = server.get("/v1/kv/api/cas")
    assert put(server, f"/v1/kv/api/cas?cas={entry['ModifyIndex'] + 100}", b"x") is False
    assert put(server, f"/v1/kv/api/cas?cas={entry['ModifyIndex']}", b"third") is True
    assert base64.b64decode(server.get("/v1/kv/api/cas")[0]["Value"]) == b"third"


def test_delete_with_cas_and_recurse(server: ServerProcess) -> None:
    put(server, "/v1/kv/del/a", b"1")
    put(server, "/v1/kv/del/b/c", b"2")
    [entry] = server.get("/v1/kv/del/a")
    assert server.request("DELETE", f"/v1/kv/del/a?cas={entry['ModifyIndex'] + 1}")[1] is False
    assert server.request("DELETE", f"/v1/kv/del/a?cas={entry['ModifyIndex']}")[1] is True
    assert server.request("GET", "/v1/kv/del/a")[0] == 404
    assert server.request("DELETE", "/v1/kv/del?recurse")[1] is True
    assert server.request("GET", "/v1/kv/del?recurse")[0] == 404


def test_a_value_over_512_kib_is_a_413_and_writes_nothing(server: ServerProcess) -> None:
    status, text, _ = server.request("PUT", "/v1/kv/api/big", b"x" * (512 * 1024 + 1))
    assert status == 413 and "too large" in text
    assert server.request("GET", "/v1/kv/api/big")[0] == 404
    assert put(server, "/v1/kv/api/big", b"x" * (512 * 1024)) is True


def test_a_write_without_a_key_is_refused(server: ServerProcess) -> None:
    assert server.request("PUT", "/v1/kv/", b"x")[:2] == (
        400,
        "Invalid request: Missing key name\n",
    )
    assert server.request("DELETE", "/v1/kv/")[0] == 400


def session(server: ServerProcess, **body: Any) -> str:
    out = put(server, "/v1/session/create", repr_json(body))
    return str(out["ID"])


def repr_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def test_a_lock_is_held_by_one_session_and_released_by_it_only(server: ServerProcess) -> None:
    one, two = session(server, Name="one"), session(server, Name="two")
    assert put(server, f"/v1/kv/locks/a?acquire={one}", b"one") is True
    [held] = server.get("/v1/kv/locks/a")
    assert held["Session"] == one and held["LockIndex"] == 1
    assert put(server, f"/v1/kv/locks/a?acquire={two}", b"two") is False
    assert put(server, f"/v1/kv/locks/a?release={two}") is False
    assert put(server, f"/v1/kv/locks/a?acquire={one}", b"still one") is True  # re-acquire
    assert server.get("/v1/kv/locks/a")[0]["LockIndex"] == 1
    assert put(server, f"/v1/kv/locks/a?release={one}", b"free") is True
    [free] = server.get("/v1/kv/locks/a")
    assert "Session" not in free and free["LockIndex"] == 1
    assert put(server, f"/v1/kv/locks/a?acquire={two}", b"two") is True  # no delay: a release
    assert server.get("/v1/kv/locks/a")[0]["LockIndex"] == 2


def test_acquiring_with_an_unknown_session_is_refused(server: ServerProcess) -> None:
    status, text, _ = server.request(
        "PUT", "/v1/kv/locks/b?acquire=00000000-0000-0000-0000-00000000dead", b""
    )
    assert status == 400 and "invalid session" in text


def test_destroying_a_session_releases_its_locks_and_starts_the_lock_delay(
    server: ServerProcess,
) -> None:
    holder = session(server, LockDelay="15s")
    other = session(server)
    assert put(server, f"/v1/kv/locks/c?acquire={holder}", b"x") is True
    assert put(server, f"/v1/session/destroy/{holder}") is True
    [entry] = server.get("/v1/kv/locks/c")
    assert "Session" not in entry
    assert put(server, f"/v1/kv/locks/c?acquire={other}") is False  # within the lock delay
    assert server.get(f"/v1/session/info/{holder}") == []


def test_a_delete_session_deletes_its_keys_when_destroyed(server: ServerProcess) -> None:
    sid = session(server, Behavior="delete", LockDelay="0s")
    assert put(server, f"/v1/kv/locks/d?acquire={sid}", b"x") is True
    put(server, f"/v1/session/destroy/{sid}")
    assert server.request("GET", "/v1/kv/locks/d")[0] == 404


def test_sessions_are_listed_read_and_renewed_in_consul_shapes(server: ServerProcess) -> None:
    sid = session(server, Name="shapes", TTL="30s", LockDelay="5s")
    [info] = server.get(f"/v1/session/info/{sid}")
    assert info["ID"] == sid and info["Name"] == "shapes" and info["TTL"] == "30s"
    assert info["LockDelay"] == 5_000_000_000 and info["Behavior"] == "release"
    assert info["Node"] == "loom-server"
    [renewed] = put(server, f"/v1/session/renew/{sid}")
    assert renewed["ID"] == sid
    assert sid in [s["ID"] for s in server.get("/v1/session/list")]
    assert sid in [s["ID"] for s in server.get("/v1/session/node/loom-server")]
    status, text, _ = server.request(
        "PUT", f"/v1/session/renew/{'0' * 8}-0000-0000-0000-{'0' * 12}"
    )
    assert status == 404 and "not found" in text


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"TTL": "5s"}, "Invalid Session TTL"),
        ({"Behavior": "explode"}, "Invalid Behavior"),
        ({"Node": "no-such-node"}, "Missing node registration"),
        ({"Checks": ["no-such-check"]}, "Missing check 'no-such-check' registration"),
    ],
)
def test_a_bad_session_is_refused_naming_the_problem(
    server: ServerProcess, body: dict[str, Any], error: str
) -> None:
    status, text, _ = server.request("PUT", "/v1/session/create", body)
    assert status == 400 and error in text


def test_a_session_linked_to_a_check_ends_when_the_check_goes_critical(
    server: ServerProcess,
) -> None:
    reg = {"Name": "locker", "Port": 9000, "Check": {"CheckID": "locker-ttl", "TTL": "60s"}}
    put(server, "/v1/agent/service/register", repr_json(reg))
    status, text, _ = server.request("PUT", "/v1/session/create", {"Checks": ["locker-ttl"]})
    assert status == 400 and "critical" in text  # a new TTL check starts critical
    put(server, "/v1/agent/check/pass/locker-ttl")
    sid = session(server, Checks=["locker-ttl"], LockDelay="0s")
    assert put(server, f"/v1/kv/locks/e?acquire={sid}") is True
    _, _, headers = server.request("GET", "/v1/kv/locks/e")
    index = headers["X-Consul-Index"]
    put(server, "/v1/agent/check/fail/locker-ttl")
    # the blocking read returns when the sweep frees the key
    [entry] = server.get(f"/v1/kv/locks/e?index={index}&wait=10s")
    assert "Session" not in entry
    assert server.get(f"/v1/session/info/{sid}") == []


def test_a_transaction_applies_all_its_ops_or_none(server: ServerProcess) -> None:
    ops = [
        {"KV": {"Verb": "set", "Key": "txn/a", "Value": b64("1"), "Flags": 7}},
        {"KV": {"Verb": "cas", "Key": "txn/b", "Value": b64("2"), "Index": 0}},
        {"KV": {"Verb": "get", "Key": "txn/a"}},
    ]
    status, out, _ = server.request("PUT", "/v1/txn", ops)
    assert status == 200 and out["Errors"] is None
    first, second, got = (r["KV"] for r in out["Results"])
    assert first["Value"] is None and first["Flags"] == 7  # writes answer without values
    assert second["Key"] == "txn/b" and base64.b64decode(got["Value"]) == b"1"
    failing = [
        {"KV": {"Verb": "set", "Key": "txn/c", "Value": b64("3")}},
        {"KV": {"Verb": "check-index", "Key": "txn/a", "Index": first["ModifyIndex"] + 1}},
        {"KV": {"Verb": "check-not-exists", "Key": "txn/b"}},
    ]
    status, out, _ = server.request("PUT", "/v1/txn", failing)
    assert status == 409 and out["Results"] is None
    assert [e["OpIndex"] for e in out["Errors"]] == [1, 2]
    assert out["Errors"][1]["What"] == 'key "txn/b" exists'
    assert server.request("GET", "/v1/kv/txn/c")[0] == 404  # the set did not happen


def test_a_transaction_sees_its_own_earlier_ops_and_deletes_trees(server: ServerProcess) -> None:
    ops = [
        {"KV": {"Verb": "set", "Key": "txt/x/1", "Value": b64("a")}},
        {"KV": {"Verb": "set", "Key": "txt/x/2", "Value": b64("b")}},
        {"KV": {"Verb": "get-tree", "Key": "txt/x/"}},
        {"KV": {"Verb": "delete-tree", "Key": "txt/x/"}},
        {"KV": {"Verb": "check-not-exists", "Key": "txt/x/1"}},
    ]
    status, out, _ = server.request("PUT", "/v1/txn", ops)
    assert status == 200, out
    assert [r["KV"]["Key"] for r in out["Results"]] == ["txt/x/1", "txt/x/2", "txt/x/1", "txt/x/2"]
    assert server.request("GET", "/v1/kv/txt/x/?recurse")[0] == 404


def test_a_transaction_of_65_ops_is_a_413(server: ServerProcess) -> None:
    ops = [{"KV": {"Verb": "get", "Key": f"k{n}"}} for n in range(65)]
    status, text, _ = server.request("PUT", "/v1/txn", ops)
    assert status == 413 and "too many operations (65 > 64)" in text


def test_a_transaction_with_a_service_op_without_its_service_is_a_400_naming_it(
    server: ServerProcess,
) -> None:
    status, text, _ = server.request("PUT", "/v1/txn", [{"Service": {"Verb": "get"}}])
    assert status == 400 and "[0].Service.Service: is required" in text


def test_a_blocking_read_wakes_on_a_write_to_its_key_and_not_on_another(
    server: ServerProcess,
) -> None:
    put(server, "/v1/kv/watch/me", b"0")
    _, _, headers = server.request("GET", "/v1/kv/watch/me")
    index = int(headers["X-Consul-Index"])
    answers: list[tuple[float, Any, dict[str, str]]] = []

    def watch() -> None:
        started = time.monotonic()
        _, body, hdrs = server.request("GET", f"/v1/kv/watch/me?index={index}&wait=20s")
        answers.append((time.monotonic() - started, body, hdrs))

    watcher = threading.Thread(target=watch)
    watcher.start()
    # writes elsewhere (another key, a service registration) do not end the wait
    put(server, "/v1/kv/watch/other", b"x")
    put(server, "/v1/agent/service/register", repr_json({"Name": "watch-svc", "Port": 1}))
    watcher.join(timeout=1.0)
    assert watcher.is_alive() and not answers
    put(server, "/v1/kv/watch/me", b"1")
    watcher.join(timeout=10)
    [(_, [entry], hdrs)] = answers
    assert base64.b64decode(entry["Value"]) == b"1"
    assert int(hdrs["X-Consul-Index"]) == entry["ModifyIndex"] > index


def test_a_blocking_prefix_read_wakes_on_a_delete_under_it(server: ServerProcess) -> None:
    put(server, "/v1/kv/wdel/a", b"0")
    _, _, headers = server.request("GET", "/v1/kv/wdel/?recurse")
    index = int(headers["X-Consul-Index"])
    done: list[int] = []

    def watch() -> None:
        status, _, hdrs = server.request("GET", f"/v1/kv/wdel/?recurse&index={index}&wait=20s")
        done.append(status)
        done.append(int(hdrs["X-Consul-Index"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    server.request("DELETE", "/v1/kv/wdel/a")
    watcher.join(timeout=10)
    assert done[0] == 404 and done[1] > index


def test_keys_and_sessions_survive_a_restart_and_ttls_start_over(tmp_path: Path) -> None:
    first = start_server(data_dir=tmp_path)
    try:
        sid = session(first, TTL="3600s")
        assert put(first, f"/v1/kv/keep/me?acquire={sid}&flags=3", b"kept") is True
    finally:
        first.stop()
    second = start_server(data_dir=tmp_path)
    try:
        [entry] = second.get("/v1/kv/keep/me")
        assert entry["Session"] == sid and entry["Flags"] == 3
        assert base64.b64decode(entry["Value"]) == b"kept"
        [info] = second.get(f"/v1/session/info/{sid}")
        assert info["TTL"] == "3600s"
        assert put(second, f"/v1/session/renew/{sid}")[0]["ID"] == sid
    finally:
        second.stop()


def test_a_snapshot_carries_the_kv_store(server: ServerProcess) -> None:
    put(server, "/v1/kv/snap/a", b"before")
    with urllib.request.urlopen(f"http://{server.http}/v1/snapshot", timeout=30) as resp:
        blob = resp.read()
    put(server, "/v1/kv/snap/a", b"after")
    put(server, "/v1/kv/snap/b", b"new")
    assert server.request("PUT", "/v1/snapshot", blob)[0] == 200
    assert base64.b64decode(server.get("/v1/kv/snap/a")[0]["Value"]) == b"before"
    assert server.request("GET", "/v1/kv/snap/b")[0] == 404
