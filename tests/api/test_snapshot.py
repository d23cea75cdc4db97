"""``loom snapshot save/restore`` and ``/v1/snapshot`` on real servers: a snapshot restores the
whole state (catalog, intentions, config entries, CA root) into the same or another backend
(memory, SQLite, etcd), wakes blocking queries, and a bad file is a 400 that changes nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd import EtcdProcess, etcd_missing_reason
from tests.support.server import ServerProcess, acl_server, start_server


def loom(*args: str, addr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loom", *args, "--http-addr", addr],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _seed(server: ServerProcess) -> None:
    for name in ("web", "api"):
        server.put("/v1/agent/service/register",
                   {"Name": name, "Port": 8080, "Connect": {"SidecarService": {}}})  # fmt: skip
    server.put("/v1/connect/intentions/exact?source=api&destination=web", {"Action": "deny"})
    server.put("/v1/config", {"Kind": "service-defaults", "Name": "web", "Protocol": "http"})


def _state(server: ServerProcess) -> dict[str, Any]:
    """What a restore must bring back, as the API shows it (indexes left out)."""
    vips = {
        s: server.get(f"/v1/catalog/service/{s}")[0]["ServiceTaggedAddresses"]["virtual"]
        for s in server.get("/v1/catalog/services")
        if not s.endswith("-proxy") and s != "consul"  # the server's own service has no VIP
    }  # fmt: skip
    return {
        "services": sorted(server.get("/v1/agent/services")),
        "vips": vips,
        "intentions": [(i["SourceName"], i["DestinationName"], i["Action"])
                       for i in server.get("/v1/connect/intentions")],
        "config": server.get("/v1/config/service-defaults/web")["Protocol"],
        "root": server.get("/v1/connect/ca/roots")["Roots"][0]["RootCert"],
    }  # fmt: skip


def _index(server: ServerProcess) -> int:
    return int(server.request("GET", "/v1/catalog/services")[2]["X-Consul-Index"])


def test_a_snapshot_saved_by_the_cli_restores_the_whole_state_and_wakes_watchers(
    tmp_path: Path,
) -> None:
    server = start_server(data_dir=tmp_path / "data")
    try:
        _seed(server)
        before = _state(server)
        saved = loom("snapshot", "save", str(tmp_path / "s.snap"), addr=server.http)
        assert saved.returncode == 0, saved.stderr
        assert saved.stdout.startswith("Saved snapshot at index ")
        server.put("/v1/agent/service/deregister/web")
        server.put("/v1/agent/service/register", {"Name": "later", "Port": 1})
        server.request("DELETE", "/v1/connect/intentions/exact?source=api&destination=web")
        assert _state(server)["services"] != before["services"]
        index = _index(server)
        woke: list[int] = []
        watcher = threading.Thread(target=lambda: woke.append(server.request(
            "GET", f"/v1/catalog/services?index={index}&wait=30s")[0]))  # fmt: skip
        watcher.start()
        restored = loom("snapshot", "restore", str(tmp_path / "s.snap"), addr=server.http)
        assert restored.returncode == 0, restored.stderr
        watcher.join(30)
        assert woke == [200]
        assert _state(server) == before
        assert _index(server) > index  # a new index: nothing goes backwards for watchers
    finally:
        server.kill()  # SIGKILL: the restore must already be durable
    again = start_server(data_dir=tmp_path / "data")
    try:
        assert _state(again) == before
    finally:
        again.stop()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    reason = etcd_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    proc = EtcdProcess(tmp_path_factory.mktemp("etcd") / "data").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_a_snapshot_of_one_backend_restores_into_the_others(
    tmp_path: Path, etcd: EtcdProcess
) -> None:
    source = start_server()  # memory
    try:
        _seed(source)
        before = _state(source)
        status, blob, headers = raw_get(source, "/v1/snapshot")
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        assert int(headers["X-Consul-Index"]) >= _index(source)  # the store index
    finally:
        source.stop()
    prefix = f"/loom-snap-{uuid.uuid4().hex[:8]}/"
    targets = [
        start_server(data_dir=tmp_path / "sqlite"),
        ServerProcess(["--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix,
                       "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]).start(),
    ]  # fmt: skip
    try:
        for target in targets:
            target.put("/v1/agent/service/register", {"Name": "gone-after-restore", "Port": 1})
            status, text, _ = target.request("PUT", "/v1/snapshot", blob)
            assert status == 200, text
            assert _state(target) == before
    finally:
        for target in targets:
            target.stop()


def raw_get(server: ServerProcess, path: str, token: str = "") -> tuple[int, bytes, dict[str, str]]:
    import urllib.error
    import urllib.request

    headers = {"X-Consul-Token": token} if token else {}
    req = urllib.request.Request(f"http://{server.http}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_a_bad_snapshot_is_a_400_naming_the_problem_and_changes_nothing(
    loom_server: ServerProcess, tmp_path: Path
) -> None:
    _seed(loom_server)
    good = raw_get(loom_server, "/v1/snapshot")[1]
    loom_server.put("/v1/agent/service/register", {"Name": "kept", "Port": 1})
    before, index = _state(loom_server), _index(loom_server)
    doc = json.loads(gzip.decompress(good))
    doc["Tables"]["vips"] = {"default/web": {"Address": "240.9.9.9"}}
    for blob, message in (
        (good[: len(good) // 2], "the snapshot is truncated"),
        (gzip.compress(json.dumps(doc).encode()), "the snapshot's SHA-256 does not match"),
        (b"hello", "not a Loom snapshot (not gzip data)"),
    ):
        status, text, _ = loom_server.request("PUT", "/v1/snapshot", blob)
        assert status == 400 and text.startswith(f"Invalid snapshot: {message}"), text
        assert _state(loom_server) == before and _index(loom_server) == index
    (tmp_path / "bad.snap").write_bytes(good[:100])
    out = loom("snapshot", "restore", str(tmp_path / "bad.snap"), addr=loom_server.http)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("loom: Invalid snapshot: the snapshot is truncated")
    assert _state(loom_server) == before and _index(loom_server) == index


def test_with_acls_on_a_snapshot_needs_a_management_token() -> None:
    secret = str(uuid.uuid4())
    with acl_server(secret) as server:
        assert raw_get(server, "/v1/snapshot")[0] == 403
        assert server.request("PUT", "/v1/snapshot", b"x")[0] == 403
        status, blob, _ = raw_get(server, "/v1/snapshot", token=secret)
        assert status == 200 and blob.startswith(b"\x1f\x8b")
        # ...and restoring it with the token brings the ACL tables back as they were.
        status, text, _ = server.request(
            "PUT", "/v1/snapshot", blob, headers={"X-Consul-Token": secret}
        )
        assert status == 200, text
        assert raw_get(server, "/v1/acl/token/self", token=secret)[0] == 200


async def test_a_restore_pushes_the_restored_configuration_to_connected_proxies() -> None:
    from loom.control import backup
    from loom.xds.translate.names import ORDER, TYPE_LISTENER
    from tests.api.test_ads_protocol import SotwClient, _setup, _stop

    state, target, stop = await _setup()
    client = SotwClient(target)
    task = asyncio.create_task(client.run())
    try:
        v1 = (await client.received(len(ORDER)))[-1].version_info
        _, blob = await backup.take(state)
        await state.configs.upsert_exact("api", "web", {"Action": "deny"})
        denied = (await client.received(len(ORDER) + 1))[-1]
        assert denied.type_url == TYPE_LISTENER and denied.version_info != v1
        restored = await backup.restore(state, blob)
        assert restored.changed == 1  # the intention's config entry, deleted
        pushed = (await client.received(len(ORDER) + 2))[-1]
        assert (pushed.type_url, pushed.version_info) == (TYPE_LISTENER, v1)
    finally:
        await _stop(task, client)
        await stop()  # type: ignore[operator]
        await state.close()
