"""``loom kv`` as real subprocesses against a real server: Consul's flags and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.server import ServerProcess


def loom(server: ServerProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom", "kv", *args, "--http-addr", server.http],
        input=stdin, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def ok(server: ServerProcess, *args: str, stdin: str = "") -> str:
    done = loom(server, *args, stdin=stdin)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def test_put_get_and_delete_with_consul_output(loom_server: ServerProcess, tmp_path: Path) -> None:
    assert ok(loom_server, "put", "app/name", "web") == "Success! Data written to: app/name\n"
    assert ok(loom_server, "get", "app/name") == "web\n"
    (tmp_path / "v.txt").write_text("from a file")
    ok(loom_server, "put", "--flags", "9", "app/file", f"@{tmp_path / 'v.txt'}")
    ok(loom_server, "put", "app/stdin", "-", stdin="from stdin")
    assert ok(loom_server, "get", "app/stdin") == "from stdin\n"
    detailed = ok(loom_server, "get", "--detailed", "app/file")
    assert "Flags            9" in detailed and "Value            from a file" in detailed
    assert "Session          -" in detailed
    assert ok(loom_server, "get", "--recurse", "app/").splitlines() == [
        "app/file:from a file", "app/name:web", "app/stdin:from stdin",
    ]  # fmt: skip
    ok(loom_server, "put", "app/deep/er", "x")
    assert ok(loom_server, "get", "--keys", "app/").split() == [
        "app/deep/", "app/file", "app/name", "app/stdin",
    ]  # fmt: skip
    assert ok(loom_server, "delete", "app/name") == "Success! Deleted key: app/name\n"
    missing = loom(loom_server, "get", "app/name")
    assert missing.returncode == 1 and "No key exists at: app/name" in missing.stderr
    assert "Deleted keys with prefix: app/" in ok(loom_server, "delete", "--recurse", "app/")
    assert ok(loom_server, "get", "--recurse", "app/") == ""


def test_cas_and_modify_index(loom_server: ServerProcess) -> None:
    ok(loom_server, "put", "--cas", "--modify-index", "0", "c/k", "first")
    refused = loom(loom_server, "put", "--cas", "--modify-index", "0", "c/k", "again")
    assert refused.returncode == 1 and "CAS failed" in refused.stderr
    detailed = ok(loom_server, "get", "--detailed", "c/k")
    index = next(line.split()[1] for line in detailed.splitlines() if line.startswith("Modify"))
    stale = loom(loom_server, "delete", "--cas", "--modify-index", str(int(index) + 5), "c/k")
    assert stale.returncode == 1
    ok(loom_server, "delete", "--cas", "--modify-index", index, "c/k")
    assert loom(loom_server, "put", "--cas", "c/k", "x").returncode == 2  # needs the index


def test_acquire_and_release_with_a_session(loom_server: ServerProcess) -> None:
    sid = loom_server.put("/v1/session/create", {"Name": "cli"})["ID"]
    out = ok(loom_server, "put", "--acquire", "--session", sid, "lock/l", "held")
    assert out == "Success! Lock acquired on: lock/l\n"
    other = loom_server.put("/v1/session/create", {"Name": "other"})["ID"]
    refused = loom(loom_server, "put", "--acquire", "--session", other, "lock/l", "mine")
    assert refused.returncode == 1 and "Did not acquire lock" in refused.stderr
    out = ok(loom_server, "put", "--release", "--session", sid, "lock/l")
    assert out == "Success! Lock released on: lock/l\n"


def test_export_then_import_round_trips_keys_flags_and_bytes(loom_server: ServerProcess) -> None:
    ok(loom_server, "put", "--flags", "3", "exp/a", "alpha")
    ok(loom_server, "put", "--base64", "exp/bin", "AAEC/w==")
    exported = json.loads(ok(loom_server, "export", "exp/"))
    assert exported == [
        {"key": "exp/a", "flags": 3, "value": "YWxwaGE="},
        {"key": "exp/bin", "flags": 0, "value": "AAEC/w=="},
    ]
    out = ok(loom_server, "import", "--prefix", "copy/", stdin=json.dumps(exported))
    assert out.splitlines() == ["Imported: copy/exp/a", "Imported: copy/exp/bin"]
    [entry] = loom_server.get("/v1/kv/copy/exp/bin")
    assert entry["Value"] == "AAEC/w==" and loom_server.get("/v1/kv/copy/exp/a")[0]["Flags"] == 3
    bad = loom(loom_server, "import", stdin="not json")
    assert bad.returncode != 0 and "not JSON" in bad.stderr
