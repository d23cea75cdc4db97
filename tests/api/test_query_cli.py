"""``loom query`` as real subprocesses against a real server: every command, its table and
its ``-format=json``, a query from a file, and the refusals a token without ``query:write``
gets (exit 1, the server's words, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.server import ServerProcess, acl_server


def loom(server: ServerProcess, *args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    extra = ["--token", token] if token else []
    return subprocess.run(
        [sys.executable, "-m", "loom", "query", *args, "--http-addr", server.http, *extra],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def ok(server: ServerProcess, *args: str, token: str = "") -> str:
    done = loom(server, *args, token=token)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def _seed(server: ServerProcess) -> None:
    for node, tags, status in (("q1", ["v1"], "passing"), ("q2", ["v2"], "warning")):
        server.put("/v1/catalog/register", {
            "Node": node, "Address": f"10.6.0.{node[1]}",
            "Service": {"Service": "qcli", "ID": f"qcli-{node}", "Port": 9000, "Tags": tags},
            "Checks": [{"CheckID": f"{node}-up", "Name": "up", "Status": status,
                        "ServiceID": f"qcli-{node}"}],
        })  # fmt: skip


def test_create_read_execute_explain_update_list_and_delete(
    loom_server: ServerProcess, tmp_path: Path
) -> None:
    _seed(loom_server)
    qid = ok(loom_server, "create", "--name", "qcli-v1", "--service", "qcli", "--tag", "v1",
             "--ttl", "5s").strip()  # fmt: skip
    uuid.UUID(qid)
    read = ok(loom_server, "read", qid)
    assert "Name:        qcli-v1" in read and "Tags:        v1" in read
    [stored] = json.loads(ok(loom_server, "read", qid, "-format=json"))
    assert stored["ID"] == qid and stored["DNS"] == {"TTL": "5s"}
    lines = ok(loom_server, "execute", "qcli-v1").splitlines()
    assert lines[0].split() == ["NODE", "ADDRESS", "SERVICE", "ID", "PORT", "STATUS"]
    assert lines[1].split() == ["q1", "10.6.0.1", "qcli-q1", "9000", "passing"]
    out = json.loads(ok(loom_server, "execute", qid, "-format=json", "--limit", "1"))
    assert out["Service"] == "qcli" and len(out["Nodes"]) == 1
    # a template from a file, explained for a name it matches
    (tmp_path / "t.json").write_text(json.dumps({
        "Name": "qcli-", "Template": {"Type": "name_prefix_match"},
        "Service": {"Service": "qcli", "Tags": ["${name.suffix}"]}}))  # fmt: skip
    tid = ok(loom_server, "create", "--file", str(tmp_path / "t.json")).strip()
    explained = json.loads(ok(loom_server, "explain", "qcli-v2", "-format=json"))
    assert explained["Query"]["Service"]["Tags"] == ["v2"]
    assert "Tags:        v2" in ok(loom_server, "explain", "qcli-v2")
    # update replaces the whole query
    assert ok(loom_server, "update", qid, "--name", "qcli-v1", "--service", "qcli",
              "--only-passing") == f"Success! Updated query: {qid}\n"  # fmt: skip
    [updated] = json.loads(ok(loom_server, "read", qid, "-format=json"))
    assert updated["Service"]["Tags"] is None and updated["Service"]["OnlyPassing"] is True
    assert updated["DNS"]["TTL"] == ""
    listed = ok(loom_server, "list").splitlines()
    assert listed[0].split() == ["ID", "NAME", "SERVICE", "TEMPLATE"]
    assert any(line.split()[:2] == [tid, "qcli-"] for line in listed[1:])
    assert {q["ID"] for q in json.loads(ok(loom_server, "list", "-format=json"))} >= {qid, tid}
    assert ok(loom_server, "delete", qid) == f"Success! Deleted query: {qid}\n"
    gone = loom(loom_server, "read", qid)
    assert gone.returncode == 1 and "Query not found" in gone.stderr


def test_usage_errors_are_exit_2_and_reach_no_server(loom_server: ServerProcess) -> None:
    before = loom_server.get("/v1/query")
    assert loom(loom_server, "create").returncode == 2  # neither --service nor --file
    assert loom(loom_server, "create", "--service", "x", "--template-regexp", "(.*)").returncode == 2
    assert loom_server.get("/v1/query") == before


def test_a_token_without_query_write_creates_and_deletes_nothing(tmp_path: Path) -> None:
    root = str(uuid.uuid4())
    with acl_server(root) as server:
        qid = ok(server, "create", "--name", "guarded", "--service", "db", token=root).strip()
        policy = {"Name": "read-only", "Rules": 'query_prefix "" { policy = "read" }'}
        server.request("PUT", "/v1/acl/policy", policy, {"X-Consul-Token": root})
        _, token, _ = server.request("PUT", "/v1/acl/token", {"Policies": [{"Name": "read-only"}]},
                                     {"X-Consul-Token": root})  # fmt: skip
        for who, said in (("", "Permission denied"), (str(uuid.uuid4()), "ACL not found"),
                          (token["SecretID"], "Permission denied")):  # fmt: skip
            made = loom(server, "create", "--name", "evil", "--service", "db", token=who)
            assert made.returncode == 1 and said in made.stderr, made.stderr
            gone = loom(server, "delete", qid, token=who)
            assert gone.returncode == 1 and said in gone.stderr, gone.stderr
        [kept] = json.loads(ok(server, "list", "-format=json", token=root))
        assert kept["ID"] == qid
