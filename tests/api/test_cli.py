"""The CLI over the HTTP API, run as real subprocesses against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from loom.cli.api import format_services
from loom.cli.intentions import format_intentions


def loom(*args: str, addr: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--http-addr", addr] if addr else []
    return subprocess.run(
        [sys.executable, "-m", "loom", *args, *extra], capture_output=True, text=True, timeout=30
    )


def test_register_list_intentions_and_config_through_the_cli(loom_server, tmp_path: Path) -> None:
    addr = loom_server.http
    svc = tmp_path / "svc.json"
    svc.write_text(json.dumps({"service": {"name": "static-server", "port": 8080,
                                           "connect": {"sidecar_service": {}}}}))  # fmt: skip
    out = loom("services", "register", str(svc), addr=addr)
    assert out.returncode == 0, out.stderr
    assert loom("catalog", "services", addr=addr).stdout.split() == [
        "consul", "static-server", "static-server-sidecar-proxy",
    ]  # fmt: skip
    assert loom("intention", "check", "static-client", "static-server", addr=addr).returncode == 0
    assert (
        loom(
            "intention", "create", "--deny", "static-client", "static-server", addr=addr
        ).returncode
        == 0
    )
    denied = loom("intention", "check", "static-client", "static-server", addr=addr)
    assert (denied.returncode, denied.stdout) == (2, "Denied\n")
    listing = loom("intention", "list", addr=addr).stdout
    assert "static-client  static-server  deny" in listing
    assert loom("intention", "delete", "static-client", "static-server", addr=addr).returncode == 0
    assert loom("intention", "check", "static-client", "static-server", addr=addr).returncode == 0
    entry = tmp_path / "sd.yaml"
    entry.write_text("Kind: service-defaults\nName: static-server\nProtocol: http\n")
    assert loom("config", "write", str(entry), addr=addr).returncode == 0
    read = loom(
        "config", "read", "--kind", "service-defaults", "--name", "static-server", addr=addr
    )
    assert json.loads(read.stdout)["Protocol"] == "http"
    assert (
        loom(
            "config", "delete", "--kind", "service-defaults", "--name", "static-server", addr=addr
        ).returncode
        == 0
    )
    assert loom("services", "deregister", "static-server", addr=addr).returncode == 0


def test_server_errors_are_one_line_without_traceback(loom_server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("Kind: service-defaults\nName: web\nProtocol: smtp\n")
    out = loom("config", "write", str(bad), addr=loom_server.http)
    assert out.returncode == 1
    assert out.stderr.startswith("loom: Invalid request: Protocol: 'smtp'")
    assert len(out.stderr.strip().splitlines()) == 1
    missing = loom("config", "write", str(tmp_path / "missing.yaml"), addr=loom_server.http)
    assert missing.stderr.startswith("loom: cannot read") and missing.returncode == 1


def test_an_unreachable_server_is_one_clear_line() -> None:
    out = loom("catalog", "services", addr="127.0.0.1:1")
    assert out.returncode == 1
    assert out.stderr.startswith("loom: cannot reach the Loom server at 127.0.0.1:1")
    assert "Traceback" not in out.stderr


def test_cli_listings_are_stable(golden) -> None:
    golden.check("cli/services.txt", format_services({"web": ["v1", "v2"], "db": []}))
    golden.check(
        "cli/intentions.txt",
        format_intentions(
            [
                {"SourceNS": "default", "SourceName": "web", "DestinationNS": "default",
                 "DestinationName": "db", "Action": "deny", "Precedence": 9},
                {"SourceNS": "team-a", "SourceName": "*", "DestinationNS": "default",
                 "DestinationName": "db", "Action": "", "Precedence": 8},
            ]
        ),
    )  # fmt: skip


def consul(*args: str, addr: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a Consul user drives it: Go-style flags, the server in CONSUL_HTTP_ADDR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOM_HTTP", "CONSUL_HTTP"))}
    return subprocess.run(
        [sys.executable, "-m", "loom", *args], capture_output=True, text=True, timeout=30,
        env={**env, "CONSUL_HTTP_ADDR": addr},
    )  # fmt: skip


def test_consul_flags_and_consul_http_addr_drive_a_real_server(loom_server) -> None:
    addr = loom_server.http
    out = consul("services", "register", "-name=api", "-port", "9090", "-tags=a,b",
                 "-meta", "v=1", addr=addr)  # fmt: skip
    assert (out.returncode, out.stdout, out.stderr) == (0, "Registered service: api\n", "")
    listed = consul("catalog", "services", "-format=json", addr=addr)
    assert json.loads(listed.stdout) == {"api": ["a", "b"], "consul": []}  # the server itself
    assert consul("intention", "create", "-deny", "web", "api", addr=addr).returncode == 0
    assert consul("intention", "check", "web", "api", addr=addr).returncode == 2
    got = json.loads(consul("intention", "get", "web", "api", "-format", "json", addr=addr).stdout)
    assert (got["SourceName"], got["DestinationName"], got["Action"]) == ("web", "api", "deny")
    assert consul("services", "deregister", "-id=api", addr=addr).returncode == 0
    assert consul("catalog", "services", addr=addr).stdout == "consul\n"


def test_intention_create_refuses_to_replace_an_intention_without_replace(loom_server) -> None:
    addr = loom_server.http
    assert consul("intention", "create", "-deny", "web", "db", addr=addr).returncode == 0
    again = consul("intention", "create", "-allow", "web", "db", addr=addr)
    assert again.returncode == 2
    assert again.stderr == (
        "loom: Intention with source 'web' and destination 'db' already exists; "
        "use -replace to replace it\n"
    )
    assert consul("intention", "check", "web", "db", addr=addr).stdout == "Denied\n"
    replaced = consul("intention", "create", "-allow", "-replace", "web", "db", addr=addr)
    assert replaced.returncode == 0, replaced.stderr
    assert consul("intention", "check", "web", "db", addr=addr).stdout == "Allowed\n"


def test_intentions_from_files_and_their_match_by_destination(loom_server, tmp_path) -> None:
    addr = loom_server.http
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"SourceName": "web", "DestinationName": "db", "Action": "deny"}))
    two = tmp_path / "two.hcl"
    two.write_text('SourceName = "*"\nDestinationName = "db"\nAction = "allow"\n')
    made = consul("intention", "create", "-file", str(one), str(two), addr=addr)
    assert made.stdout == "Created: web => db (deny)\nCreated: * => db (allow)\n", made.stderr
    matched = consul("intention", "match", "db", addr=addr).stdout.splitlines()
    assert [line.split()[:3] for line in matched] == [
        ["SOURCE", "DESTINATION", "ACTION"], ["web", "db", "deny"], ["*", "db", "allow"],
    ]  # fmt: skip
    by_source = json.loads(consul("intention", "match", "-source", "web", "-format=json",
                                  addr=addr).stdout)  # fmt: skip
    assert [(i["SourceName"], i["DestinationName"]) for i in by_source["web"]] == [
        ("web", "db"), ("*", "db"),
    ]  # fmt: skip


def test_an_hcl_definition_registers_and_the_same_file_deregisters(loom_server, tmp_path) -> None:
    addr = loom_server.http
    web = tmp_path / "web.hcl"
    web.write_text('service {\n  name = "web"\n  port = 8080\n  connect { sidecar_service {} }\n}\n')
    assert consul("services", "register", str(web), addr=addr).returncode == 0
    listed = "consul\nweb\nweb-sidecar-proxy\n"  # consul: the server registers itself
    assert consul("catalog", "services", addr=addr).stdout == listed
    out = consul("services", "deregister", str(web), addr=addr)
    assert (out.returncode, out.stdout) == (0, "Deregistered service: web\n")
    assert consul("catalog", "services", addr=addr).stdout == "consul\n"


def test_a_definition_with_an_unknown_key_registers_nothing(loom_server, tmp_path) -> None:
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"service": {"name": "typo", "prot": 86}}))
    out = consul("services", "register", str(typo), addr=loom_server.http)
    assert (out.returncode, out.stderr) == (
        1, f"loom: {typo}: service.prot: unknown field (did you mean 'Port'?)\n",
    )  # fmt: skip
    assert consul("catalog", "services", addr=loom_server.http).stdout == "consul\n"


def test_config_entries_in_hcl_are_written_and_read_back(loom_server, tmp_path) -> None:
    addr = loom_server.http
    entry = tmp_path / "sd.hcl"
    entry.write_text('Kind = "service-defaults"\nName = "web"\nProtocol = "http"\n')
    assert consul("config", "write", str(entry), addr=addr).returncode == 0
    read = consul("config", "read", "-kind", "service-defaults", "-name", "web", addr=addr)
    assert json.loads(read.stdout)["Protocol"] == "http"
    table = consul("config", "read", "-kind=service-defaults", "-name=web", "-format=table",
                   addr=addr).stdout  # fmt: skip
    assert "Protocol:" in table and "http" in table
    names = consul("config", "list", "-kind", "service-defaults", addr=addr).stdout
    assert names == "web\n"


def test_redirect_traffic_takes_the_ports_of_the_proxy_id_registration(loom_server) -> None:
    addr = loom_server.http
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 8080, "Connect": {
        "SidecarService": {"Port": 21234, "Proxy": {
            "Mode": "transparent", "TransparentProxy": {"OutboundListenerPort": 15999}}}}})  # fmt: skip
    shown = consul("connect", "redirect-traffic", "-print", "-proxy-uid", "5995",
                   "-proxy-id", "web-sidecar-proxy", addr=addr)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "--to-ports 21234" in shown.stdout and "--to-ports 15999" in shown.stdout
    given = consul("connect", "redirect-traffic", "-print", "-proxy-uid", "5995",
                   "-proxy-id", "web-sidecar-proxy", "-proxy-inbound-port", "20001",
                   addr=addr)  # fmt: skip
    assert "--to-ports 20001" in given.stdout and "--to-ports 21234" not in given.stdout
    wrong = consul("connect", "redirect-traffic", "-print", "-proxy-uid", "5995",
                   "-proxy-id", "web", addr=addr)  # fmt: skip
    assert (wrong.returncode, wrong.stderr) == (
        2, "loom: --proxy-id web: service is not a connect-proxy\n",
    )  # fmt: skip
