"""``<query>.query.consul`` asked by ``dig`` of a real ``loom dns-proxy`` watching a real server.

The server executes every prepared query for the name table it pushes (``control/dnsqueries``),
so these names follow health as ``svc.service.consul`` does: a check going critical takes the
instance out of an ``OnlyPassing`` query's answer as soon as the proxy has the next table.
Names the table does not know go to a dnsmasq that answers NXDOMAIN under ``consul``.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_dns_cli import DIG, DNSMASQ, dig, serving
from tests.support.federation import until_blocking
from tests.support.mesh import free_port as free_tcp_port
from tests.support.mesh import free_udp_tcp_port as free_port
from tests.support.server import ServerProcess

pytestmark = [
    pytest.mark.skipif(DIG is None, reason="needs dig (apt-get install dnsutils)"),
    pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="needs dnsmasq (dnsmasq-base)"),
]


def register(server: ServerProcess, node: str, address: str, sid: str, port: int,
             tags: list[str], status: str) -> None:  # fmt: skip
    server.put("/v1/catalog/register", {
        "Node": node, "Address": address,
        "Service": {"Service": "gq", "ID": sid, "Port": port, "Tags": tags},
        "Checks": [{"CheckID": f"{sid}-ok", "Name": "ok", "Status": status, "ServiceID": sid}],
    })  # fmt: skip


Proxied = tuple[ServerProcess, int, str]
"""The server, the proxy's DNS port and the address of its metrics (and ``/table``)."""


@pytest.fixture
def proxy(loom_server: ServerProcess, tmp_path: Path) -> Iterator[Proxied]:
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    upstream, port, status = free_port(), free_port(), f"127.0.0.1:{free_tcp_port()}"
    dnsmasq = [
        DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
        f"--port={upstream}", "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--address=/consul/",
    ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "loom", "dns-proxy", "--server", loom_server.http,
        "--listen", f"127.0.0.1:{port}", "--resolv-conf", str(tmp_path / "resolv.conf"),
        "--upstream", f"127.0.0.1:{upstream}", "--metrics", status,
    ]  # fmt: skip
    with serving(dnsmasq, upstream, tmp_path / "dnsmasq.log"), \
            serving(cmd, port, tmp_path / "proxy.log") as proc:  # fmt: skip
        yield loom_server, port, status
    assert proc.returncode == 0, (tmp_path / "proxy.log").read_text()


def answers(port: int, name: str, qtype: str = "A") -> list[tuple[int, str]]:
    """(TTL, data) of each answer record, in the order the proxy sent them."""
    out = dig(port, name, qtype, "+noall", "+answer")
    return [(int(f[1]), " ".join(f[4:])) for f in (line.split() for line in out.splitlines()) if f]


def in_table(server: ServerProcess, wanted: dict[str, list[str]]) -> int:
    """Blocking queries on the server's name table until each named query answers exactly
    these addresses (in any order): the index of that table, the one the proxy's own watch
    gets next."""

    def holds(table: dict[str, Any]) -> bool:
        found = {q["Name"]: sorted(i["Address"] for i in q["Instances"])
                 for q in table.get("Queries", []) if "Name" in q}  # fmt: skip
        return all(found.get(name) == sorted(addrs) for name, addrs in wanted.items())

    index: int = until_blocking(server, "/v1/loom/dns-table", holds)["Index"]
    return index


def caught_up(status: str, index: int) -> None:
    """After ``in_table``: one blocking read of the proxy's ``/table`` that returns once the
    proxy answers from a table at ``index`` or later (its watch is woken by the same change,
    so the wait is short); from then on one ``dig`` sees what the server's table says."""
    url = f"http://{status}/table?index={index}&wait=10s"
    with urllib.request.urlopen(url, timeout=20) as resp:
        served = json.load(resp)["Index"]
    assert served >= index, f"the proxy still answers from the table at {served}, not {index}"


def test_dig_gets_a_querys_instances_by_name_and_id_with_its_ttl(
    proxy: Proxied,
) -> None:
    server, port, status = proxy
    register(server, "n1", "10.9.0.1", "gq-1", 7000, ["primary"], "passing")
    register(server, "n2", "10.9.0.2", "gq-2", 7001, ["replica"], "warning")
    qid = server.request("POST", "/v1/query", {"Name": "gq-pass", "DNS": {"TTL": "7s"},
                         "Service": {"Service": "gq", "OnlyPassing": True}})[1]["ID"]  # fmt: skip
    server.request("POST", "/v1/query", {"Name": "gq-all", "Service": {"Service": "gq"}})
    caught_up(status, in_table(server, {"gq-pass": ["10.9.0.1"],
                                        "gq-all": ["10.9.0.1", "10.9.0.2"]}))  # fmt: skip
    assert answers(port, "gq-pass.query.consul") == [(7, "10.9.0.1")]
    assert answers(port, "GQ-Pass.query.dc1.consul.") == [(7, "10.9.0.1")]
    assert answers(port, f"{qid}.query.consul") == [(7, "10.9.0.1")]
    assert sorted(d for _, d in answers(port, "gq-all.query.consul")) == ["10.9.0.1", "10.9.0.2"]
    assert {t for t, _ in answers(port, "gq-all.query.consul")} == {30}  # no DNS.TTL: default
    srv = dig(port, "gq-all.query.consul", "SRV", "+noall", "+answer", "+additional")
    records = sorted(tuple(line.split()[3:]) for line in srv.splitlines() if line.split())
    assert records == [
        ("A", "10.9.0.1"), ("A", "10.9.0.2"),
        ("SRV", "1", "1", "7000", "0a090001.addr.dc1.consul."),
        ("SRV", "1", "1", "7001", "0a090002.addr.dc1.consul."),
    ]  # fmt: skip
    assert "0a090001.addr.dc1.consul. 30 IN A 10.9.0.1" in " ".join(srv.split())
    assert answers(port, "0a090002.addr.dc1.consul") == [(30, "10.9.0.2")]
    assert [d for _, d in answers(port, "gq-pass.query.consul", "SRV")] == [
        "1 1 7000 0a090001.addr.dc1.consul."]  # fmt: skip
    assert "status: NXDOMAIN" in dig(port, "nothing.query.consul", "A")
    assert "status: NXDOMAIN" in dig(port, "gq-pass.query.dc2.consul", "A")  # not this dc's
    assert "status: NXDOMAIN" in dig(port, "0c7dbd0f-2e5d-4a4b-9b7e-1b1c1d1e1f10.query.consul",
                                     "A")  # fmt: skip
    # The table names the query by a hash of its ID: reading it does not disclose the ID.
    assert qid not in str(server.get("/v1/loom/dns-table"))


def test_a_check_going_critical_takes_the_instance_out_of_an_only_passing_answer(
    proxy: Proxied,
) -> None:
    server, port, status = proxy
    register(server, "n1", "10.9.0.1", "gq-1", 7000, [], "passing")
    register(server, "n2", "10.9.0.2", "gq-2", 7001, [], "passing")
    server.request("POST", "/v1/query", {"Name": "gq-pass",
                   "Service": {"Service": "gq", "OnlyPassing": True}})  # fmt: skip

    def addresses() -> list[str]:
        return sorted(d for _, d in answers(port, "gq-pass.query.consul"))

    both, one = ["10.9.0.1", "10.9.0.2"], ["10.9.0.1"]
    caught_up(status, in_table(server, {"gq-pass": both}))
    assert addresses() == both
    register(server, "n2", "10.9.0.2", "gq-2", 7001, [], "critical")
    caught_up(status, in_table(server, {"gq-pass": one}))
    assert addresses() == one
    register(server, "n2", "10.9.0.2", "gq-2", 7001, [], "passing")
    caught_up(status, in_table(server, {"gq-pass": both}))
    assert addresses() == both


def test_a_template_answers_the_names_it_renders_for(proxy: Proxied) -> None:
    server, port, status = proxy
    register(server, "n1", "10.9.0.1", "gq-1", 7000, ["primary"], "passing")
    register(server, "n2", "10.9.0.2", "gq-2", 7001, ["replica"], "passing")
    server.request("POST", "/v1/query", {"Name": "gq-", "Template": {"Type": "name_prefix_match"},
                   "Service": {"Service": "gq", "Tags": ["${name.suffix}"]}})  # fmt: skip
    caught_up(status, in_table(server, {"gq-replica": ["10.9.0.2"], "gq-primary": ["10.9.0.1"]}))
    assert [d for _, d in answers(port, "gq-replica.query.consul")] == ["10.9.0.2"]
    assert [d for _, d in answers(port, "gq-primary.query.consul")] == ["10.9.0.1"]
    assert "status: NXDOMAIN" in dig(port, "gq-canary.query.consul", "A")  # renders, finds none


def test_a_near_agent_query_answers_the_servers_node_first_every_time(
    proxy: Proxied,
) -> None:
    server, port, status = proxy
    node = server.get("/v1/agent/self")["Config"]["NodeName"]
    agent_address = server.get(f"/v1/catalog/node/{node}")["Node"]["Address"]
    register(server, "aaa", "10.9.0.1", "gq-1", 7000, [], "passing")
    register(server, "zzz", "10.9.0.3", "gq-3", 7000, [], "passing")
    server.put("/v1/agent/service/register", {"Name": "gq", "ID": "gq-local", "Port": 7000})
    server.request("POST", "/v1/query", {"Name": "near", "Service": {"Service": "gq",
                   "Near": "_agent"}})  # fmt: skip
    server.request("POST", "/v1/query", {"Name": "plain", "Service": {"Service": "gq"}})
    three = ["10.9.0.1", "10.9.0.3", agent_address]
    caught_up(status, in_table(server, {"near": three, "plain": three}))
    firsts = {answers(port, "near.query.consul")[0][1] for _ in range(3)}
    assert firsts == {agent_address}  # never rotated away
    rotated = {answers(port, "plain.query.consul")[0][1] for _ in range(3)}
    assert rotated == {"10.9.0.1", "10.9.0.3", agent_address}  # as Consul shuffles them
