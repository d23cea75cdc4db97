"""``loom config write`` of a ``service-resolver`` in Consul's HCL against a real server:
it is stored, read back and listed in Consul's shape; a resolver that would loop is one clear
line and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

from tests.api.test_cli import loom

RESOLVER = """\
Kind           = "service-resolver"
Name           = "web"
DefaultSubset  = "v1"
ConnectTimeout = "3s"
Subsets = {
  v1 = {
    Filter = "Service.Meta.version == v1"
  }
  v2 = {
    Filter      = "Service.Meta.version == v2"
    OnlyPassing = true
  }
}
Failover = {
  "*" = {
    Datacenters = ["dc2", "dc3"]
  }
}
"""


def test_a_resolver_in_hcl_is_written_read_back_and_listed(loom_server, tmp_path: Path) -> None:
    addr = loom_server.http
    entry = tmp_path / "web-resolver.hcl"
    entry.write_text(RESOLVER)
    out = loom("config", "write", str(entry), addr=addr)
    assert out.returncode == 0, out.stderr
    read = json.loads(
        loom("config", "read", "--kind", "service-resolver", "--name", "web", addr=addr).stdout
    )
    assert read["DefaultSubset"] == "v1" and read["ConnectTimeout"] == "3s"
    assert read["Subsets"]["v2"] == {"Filter": "Service.Meta.version == v2", "OnlyPassing": True}
    assert read["Failover"] == {"*": {"Datacenters": ["dc2", "dc3"]}}
    listed = loom("config", "list", "--kind", "service-resolver", addr=addr)
    assert listed.returncode == 0 and "web" in listed.stdout


def test_a_resolver_redirecting_back_is_one_line_and_not_written(loom_server, tmp_path) -> None:
    addr = loom_server.http
    first, back = tmp_path / "a.hcl", tmp_path / "b.hcl"
    first.write_text('Kind = "service-resolver"\nName = "a"\nRedirect = { Service = "b" }\n')
    back.write_text('Kind = "service-resolver"\nName = "b"\nRedirect = { Service = "a" }\n')
    assert loom("config", "write", str(first), addr=addr).returncode == 0
    out = loom("config", "write", str(back), addr=addr)
    assert out.returncode == 1
    assert out.stderr.startswith("loom: Invalid request: detected circular resolver redirect")
    assert len(out.stderr.strip().splitlines()) == 1
    gone = loom("config", "read", "--kind", "service-resolver", "--name", "b", addr=addr)
    assert gone.returncode != 0
