"""``loom catalog nodes|datacenters``, ``loom members`` and ``loom connect ca get-config|
set-config``: the tables against golden files (pure formatting), and each command run as a real
subprocess against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loom.cli.operator import format_members, format_nodes

NODES = [
    {"Node": "worker-02", "ID": "41e4a748-2192-161a-0510-9bf59fe950b5", "Address": "10.4.5.32",
     "Datacenter": "dc1", "TaggedAddresses": {"lan": "10.4.5.32", "wan": "192.0.2.2"},
     "Meta": {"rack": "r2", "os": "linux"}},
    {"Node": "worker-01", "ID": "1b662d97-8b5c-3cc2-0ac0-96f55ad423b0", "Address": "10.4.5.31",
     "Datacenter": "dc1", "TaggedAddresses": {}, "Meta": {}},
    {"Node": "loom-server", "ID": "", "Address": "127.0.0.1", "Datacenter": "dc1",
     "TaggedAddresses": {}, "Meta": {}},
]  # fmt: skip
MEMBERS = [
    {"Name": "loom-server", "Addr": "127.0.0.1", "Port": 8301, "Status": 1,
     "Tags": {"role": "consul", "dc": "dc1", "build": "0.1.0", "vsn": "2", "port": "8300"}},
    {"Name": "client-1", "Addr": "10.0.0.9", "Port": 8301, "Status": 4,
     "Tags": {"role": "node", "dc": "dc1", "build": "1.17.0:abc", "vsn": "2"}},
]  # fmt: skip


def test_the_nodes_table_is_consul_s(golden) -> None:  # type: ignore[no-untyped-def]
    text = format_nodes(NODES) + "\n" + format_nodes(NODES, detailed=True)
    golden.check("cli/catalog_nodes.txt", text)


def test_the_members_table_is_consul_s(golden) -> None:  # type: ignore[no-untyped-def]
    text = format_members(MEMBERS) + "\n" + format_members(MEMBERS, detailed=True)
    golden.check("cli/members.txt", text)


def loom(*args: str, addr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom", *args, "--http-addr", addr],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_catalog_nodes_lists_registered_nodes_and_those_of_a_service(loom_server) -> None:  # type: ignore[no-untyped-def]
    addr = loom_server.http
    loom_server.put("/v1/catalog/register", {"Node": "n1", "Address": "10.0.0.1", "NodeMeta": {"rack": "r1"},
                                             "Service": {"Service": "db", "Port": 5432}})  # fmt: skip
    loom_server.put("/v1/catalog/register", {"Node": "n2", "Address": "10.0.0.2"})
    out = loom("catalog", "nodes", addr=addr)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == [
        "Node", "loom-server", "n1", "n2",
    ]  # fmt: skip
    assert out.stdout.splitlines()[2].split() == ["n1", "10.0.0.1", "dc1"]
    only_db = loom("catalog", "nodes", "--service", "db", addr=addr)
    assert [line.split()[0] for line in only_db.stdout.splitlines()] == ["Node", "n1"]
    by_meta = loom("catalog", "nodes", "--node-meta", "rack=r1", addr=addr)
    assert [line.split()[0] for line in by_meta.stdout.splitlines()] == ["Node", "n1"]
    detailed = loom("catalog", "nodes", "--detailed", "--filter", 'Node == "n1"', addr=addr)
    assert "rack=r1" in detailed.stdout and "n2" not in detailed.stdout
    none = loom("catalog", "nodes", "--service", "nothing", addr=addr)
    assert (none.returncode, none.stdout) == (0, "")
    assert "No nodes match" in none.stderr


def test_catalog_datacenters_and_members(loom_server) -> None:  # type: ignore[no-untyped-def]
    addr = loom_server.http
    out = loom("catalog", "datacenters", addr=addr)
    assert (out.returncode, out.stdout) == (0, "dc1\n")
    members = loom("members", addr=addr)
    assert members.returncode == 0, members.stderr
    head, row = members.stdout.splitlines()
    assert head.split() == ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC",
                            "Partition", "Segment"]  # fmt: skip
    assert row.split()[:4] == ["loom-server", "127.0.0.1:8301", "alive", "server"]
    assert loom("members", "--status", "failed", addr=addr).returncode == 2
    assert "role=consul" in loom("members", "--detailed", addr=addr).stdout
    assert "loom-server.dc1" in loom("members", "--wan", addr=addr).stdout


def test_connect_ca_get_config_and_set_config(loom_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    addr = loom_server.http
    got = loom("connect", "ca", "get-config", addr=addr)
    assert got.returncode == 0, got.stderr
    config = json.loads(got.stdout)
    assert config["Provider"] == "consul"
    new = tmp_path / "ca.json"
    new.write_text(json.dumps({"Provider": "consul", "Config": {"LeafCertTTL": "24h"}}))
    out = loom("connect", "ca", "set-config", "--config-file", str(new), addr=addr)
    assert (out.returncode, out.stdout) == (0, "Configuration updated!\n"), out.stderr
    again = json.loads(loom("connect", "ca", "get-config", addr=addr).stdout)
    assert again["Config"]["LeafCertTTL"] == "24h"
    assert again["ModifyIndex"] > config["ModifyIndex"]
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    refused = loom("connect", "ca", "set-config", "--config-file", str(bad), addr=addr)
    assert refused.returncode != 0 and "expected an object" in refused.stderr
