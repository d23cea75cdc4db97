"""Real Consul clients on Loom's KV, sessions and transactions: py-consul (PyPI) and the npm
``consul`` package (installed into the test's temp dir with npm; skipped with the reason when
npm or the registry is not there). Each against a real `loom server`."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import pytest

from tests.support.server import ServerProcess, start_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = start_server()
    try:
        yield s
    finally:
        s.stop()


def client(server: ServerProcess) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


def test_py_consul_puts_gets_and_deletes_keys(server: ServerProcess) -> None:
    c = client(server)
    assert c.kv.put("app/config/db", "postgres://db", flags=5) is True
    index, entry = c.kv.get("app/config/db")
    assert entry["Value"] == b"postgres://db" and entry["Flags"] == 5 and int(index) > 0
    assert c.kv.put("app/config/cache", "redis") is True
    _, entries = c.kv.get("app/config/", recurse=True)
    assert [e["Key"] for e in entries] == ["app/config/cache", "app/config/db"]
    _, keys = c.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/config/"]
    assert c.kv.put("app/config/db", "new", cas=entry["ModifyIndex"]) is True
    assert c.kv.put("app/config/db", "stale", cas=entry["ModifyIndex"]) is False
    assert c.kv.delete("app/config/db") is True
    assert c.kv.get("app/config/db")[1] is None
    assert c.kv.delete("app/", recurse=True) is True
    assert c.kv.get("app/", recurse=True)[1] is None


def test_py_consul_blocking_get_returns_on_a_write(server: ServerProcess) -> None:
    c = client(server)
    c.kv.put("watched", "0")
    index, _ = c.kv.get("watched")
    got: list[Any] = []
    watcher = threading.Thread(target=lambda: got.append(c.kv.get("watched", index=index)))
    watcher.start()
    c.kv.put("watched", "1")
    watcher.join(timeout=15)
    [(new_index, entry)] = got
    assert entry["Value"] == b"1" and int(new_index) > int(index)


def test_py_consul_manages_sessions(server: ServerProcess) -> None:
    c = client(server)
    sid = c.session.create(name="worker", ttl=30, lock_delay=1, behavior="delete")
    _, info = c.session.info(sid)
    assert info["Name"] == "worker" and info["Behavior"] == "delete" and info["TTL"] == "30s"
    assert info["LockDelay"] == 1_000_000_000
    assert c.session.renew(sid)["ID"] == sid
    _, listed = c.session.list()
    assert sid in [s["ID"] for s in listed]
    _, on_node = c.session.node(info["Node"])
    assert sid in [s["ID"] for s in on_node]
    assert c.session.destroy(sid) is True
    assert c.session.info(sid)[1] is None
    with pytest.raises(consul.NotFound, match="not found"):  # Consul's 404
        c.session.renew(sid)


def test_py_consul_txn_put_applies_every_op(server: ServerProcess) -> None:
    c = client(server)
    value = base64.b64encode(b"from-txn").decode()
    out = c.txn.put(
        [
            {"KV": {"Verb": "set", "Key": "txn/py/a", "Value": value}},
            {"KV": {"Verb": "set", "Key": "txn/py/b", "Value": value}},
            {"KV": {"Verb": "get-tree", "Key": "txn/py/"}},
        ]
    )
    assert out["Errors"] is None
    assert [r["KV"]["Key"] for r in out["Results"]] == [
        "txn/py/a", "txn/py/b", "txn/py/a", "txn/py/b",
    ]  # fmt: skip
    assert c.kv.get("txn/py/b")[1]["Value"] == b"from-txn"


def test_leader_election_with_acquire_and_release(server: ServerProcess) -> None:
    """Two candidates race for ``service/leader`` as Consul's leader-election guide has it:
    one wins, the other watches the key and takes over once the leader releases it."""
    c = client(server)
    key = "service/election/leader"
    first = c.session.create(name="candidate-1", lock_delay=0)
    second = c.session.create(name="candidate-2", lock_delay=0)
    assert c.kv.put(key, "candidate-1", acquire=first) is True
    assert c.kv.put(key, "candidate-2", acquire=second) is False
    index, entry = c.kv.get(key)
    assert entry["Session"] == first and entry["Value"] == b"candidate-1"
    took_over: list[bool] = []

    def follower() -> None:
        idx = index
        while True:
            idx, current = c.kv.get(key, index=idx, wait="10s")
            if current is not None and "Session" not in current:
                took_over.append(c.kv.put(key, "candidate-2", acquire=second))
                return

    watcher = threading.Thread(target=follower)
    watcher.start()
    assert c.kv.put(key, "candidate-1", release=first) is True
    watcher.join(timeout=15)
    assert took_over == [True]
    _, entry = c.kv.get(key)
    assert entry["Session"] == second and entry["LockIndex"] == 2
    c.session.destroy(first)
    c.session.destroy(second)
    assert "Session" not in c.kv.get(key)[1]


NODE_SCRIPT = """
const Consul = require('consul');
(async () => {
  const [host, port] = process.argv[2].split(':');
  const c = new Consul({ host, port: Number(port) });
  const out = {};
  out.set = await c.kv.set('npm/greeting', 'hello from node');
  out.get = await c.kv.get('npm/greeting');
  await c.kv.set('npm/other', 'x');
  out.keys = await c.kv.keys('npm/');
  out.del = await c.kv.del('npm/greeting');
  out.after = (await c.kv.get('npm/greeting')) ?? null;
  console.log(JSON.stringify(out));
})().catch((err) => { console.error(err); process.exit(1); });
"""


@pytest.fixture(scope="module")
def npm_consul(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm or node is not installed")
    where = tmp_path_factory.mktemp("npm-consul")
    try:
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", "consul@2"],
            cwd=where, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"npm could not install the consul package: {exc}")
    return where


def test_the_npm_consul_client_sets_gets_lists_and_deletes_keys(
    server: ServerProcess, npm_consul: Path
) -> None:
    script = npm_consul / "kv.js"
    script.write_text(NODE_SCRIPT)
    done = subprocess.run(
        ["node", str(script), server.http],
        cwd=npm_consul, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["set"] is True and out["del"] is True
    assert out["get"]["Value"] == "hello from node" and out["get"]["Key"] == "npm/greeting"
    assert out["keys"] == ["npm/greeting", "npm/other"]
    assert out["after"] is None
