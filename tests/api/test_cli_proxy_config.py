"""`loom proxy config ID` against a real server: what it would send the proxy, readable, and
whole as JSON; the readable form golden-tested on a fixed configuration."""

from __future__ import annotations

import json
import subprocess
import sys

from loom.cli.proxyconfig import format_config


def _loom(*args: str, addr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loom", *args, "-http-addr", addr],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_proxy_config_shows_the_rbac_an_intention_makes(loom_server) -> None:
    addr = loom_server.http
    loom_server.put("/v1/agent/service/register", {"Name": "db", "Port": 5432,
                                                   "Connect": {"SidecarService": {}}})  # fmt: skip
    loom_server.put("/v1/agent/service/register", {
        "Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Proxy": {
            "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]}}}})  # fmt: skip
    assert _loom("intention", "create", "-deny", "web", "db", addr=addr).returncode == 0
    shown = _loom("proxy", "config", "db-sidecar-proxy", addr=addr)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("proxy db-sidecar-proxy (service db)\n")
    rbac = [line.split() for line in shown.stdout.splitlines() if line.startswith("public_")]
    assert ["ALLOW", "default-allow", "(any", "and", "not", "ns/default/svc/web)"] in [
        r[1:] for r in rbac
    ], shown.stdout
    web = json.loads(_loom("proxy", "config", "web-sidecar-proxy", "-format=json",
                           addr=addr).stdout)  # fmt: skip
    assert web["Service"] == "web"
    assert any(c["name"].startswith("db.") for c in web["Clusters"]), web["Clusters"]
    missing = _loom("proxy", "config", "nobody", addr=addr)
    assert missing.returncode == 1
    assert "unknown proxy 'nobody'" in missing.stderr


CONFIG = {
    "ID": "db-sidecar-proxy", "Service": "db",
    "Listeners": [{
        "name": "public_listener:0.0.0.0:21001", "traffic_direction": "INBOUND",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 21001}},
        "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.rbac", "typed_config": {"rules": {
                "action": "ALLOW", "policies": {"default-allow": {
                    "permissions": [{"any": True}],
                    "principals": [{"and_ids": {"ids": [{"any": True}, {"not_id": {
                        "authenticated": {"principal_name": {"safe_regex": {
                            "regex": "^spiffe://td.consul/ns/default/dc/[^/]+/svc/web$"}}}}}]}}],
                }}}}},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {}},
        ]}],
    }],
    "Clusters": [
        {"name": "db.default.dc1.internal.td.consul", "type": "EDS", "eds_cluster_config": {}},
        {"name": "local_app", "type": "STATIC", "load_assignment": {"endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": 5432}}}}]}]}},
    ],
    "Endpoints": [{"cluster_name": "db.default.dc1.internal.td.consul", "endpoints": [
        {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": "10.0.0.7", "port_value": 21001}}}}]}]}],
}  # fmt: skip


def test_the_readable_config_is_stable(golden) -> None:
    golden.check("cli/proxy_config.txt", format_config(CONFIG))
