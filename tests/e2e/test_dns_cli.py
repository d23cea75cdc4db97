"""``loom dns-proxy`` as a process, asked by ``dig``, forwarding to a real dnsmasq on loopback."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import pytest

from tests.support.mesh import free_udp_tcp_port as free_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
DIG = shutil.which("dig")
pytestmark = [
    pytest.mark.skipif(DIG is None, reason="needs dig (apt-get install dnsutils)"),
    pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="needs dnsmasq (dnsmasq-base)"),
]

TABLE: dict[str, Any] = {
    "Index": 1,
    "Datacenter": "dc1",
    "ClusterDomain": "cluster.local",
    "Services": [
        {
            "Name": "static-server",
            "Namespace": "default",
            "VirtualIPs": ["240.0.0.3"],
            "Instances": [{"Address": "10.244.0.5", "Hostname": "static-server-7d9f"}],
        },
    ],
    "ExternalHosts": [
        {
            "Host": "mysql-instance1.us-east-1.rds.amazonaws.com",
            "Service": "db1",
            "Namespace": "ns1",
            "VirtualIPs": ["240.240.0.1", "fd00:f0f0::1"],
        },
    ],
}


def wait_until_answering(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll with a real query until the server answers (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    query = dns.message.make_query("readiness.probe.invalid", "TXT")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {log.read_text()}")
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
            return
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
    raise AssertionError("server did not answer within 10 s")


@contextlib.contextmanager
def serving(cmd: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a DNS server process until the block ends (SIGTERM, then SIGKILL after 5 s)."""
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until_answering(port, proc, log)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dig(port: int, *args: str) -> str:
    out = subprocess.run(
        [DIG or "dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """dnsmasq on a loopback port, answering example.test names from its command line."""
    tmp_path = tmp_path_factory.mktemp("dnsmasq")
    port = free_port()
    cmd = [
        DNSMASQ,
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--pid-file={tmp_path / 'dnsmasq.pid'}",
        "--address=/example.test/192.0.2.1",
    ]
    with serving(cmd, port, tmp_path / "dnsmasq.log"):
        yield port


def write_files(tmp_path: Path) -> dict[str, Path]:
    table = tmp_path / "table.json"
    table.write_text(json.dumps(TABLE))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "nameserver 192.0.2.53\nsearch default.svc.cluster.local "
        "svc.cluster.local cluster.local\noptions ndots:5\n"
    )
    return {"table": table, "resolv": resolv}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return write_files(tmp_path)


@pytest.fixture(scope="module")
def shared_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_files(tmp_path_factory.mktemp("proxy"))


@contextlib.contextmanager
def running_proxy(files: dict[str, Path], dnsmasq: int) -> Iterator[int]:
    """``loom dns-proxy --table`` forwarding to dnsmasq; yields its port."""
    port = free_port()
    log = files["table"].parent / "proxy.log"
    cmd = [
        sys.executable,
        "-m",
        "loom",
        "dns-proxy",
        "--table",
        str(files["table"]),
        "--listen",
        f"127.0.0.1:{port}",
        "--resolv-conf",
        str(files["resolv"]),
        "--upstream",
        f"127.0.0.1:{dnsmasq}",
    ]
    with serving(cmd, port, log) as proc:
        yield port
    assert proc.returncode == 0, log.read_text()  # SIGTERM is a clean exit


@pytest.fixture(scope="module")
def proxy(shared_files: dict[str, Path], dnsmasq: int) -> Iterator[int]:
    """One proxy for the tests that only ask questions."""
    with running_proxy(shared_files, dnsmasq) as port:
        yield port


def test_dig_gets_a_mesh_name_answered_authoritatively(proxy: int) -> None:
    out = dig(
        proxy, "static-server.default.svc.cluster.local", "A", "+noall", "+comments", "+answer"
    )
    assert "status: NOERROR" in out and "flags: qr aa rd ra;" in out
    answers = [line.split() for line in out.splitlines() if line and not line.startswith(";")]
    assert answers == [["static-server.default.svc.cluster.local.", "30", "IN", "A", "240.0.0.3"]]


def test_dig_short_answers_cover_aaaa_tcp_and_autopath(proxy: int) -> None:
    host = "mysql-instance1.us-east-1.rds.amazonaws.com"
    assert dig(proxy, host, "AAAA", "+short") == "fd00:f0f0::1\n"
    assert dig(proxy, "static-server", "A", "+short", "+tcp") == "240.0.0.3\n"
    assert dig(proxy, f"{host}.default.svc.cluster.local", "A", "+short") == (
        f"{host}.\n240.240.0.1\n"
    )


def test_dig_gets_nodata_for_a_known_name_of_the_other_family(proxy: int) -> None:
    out = dig(proxy, "static-server.default", "AAAA")
    assert "status: NOERROR" in out and "ANSWER: 0" in out


def test_names_the_table_does_not_know_are_answered_by_dnsmasq(proxy: int) -> None:
    assert dig(proxy, "www.example.test", "A", "+short") == "192.0.2.1\n"
    assert dig(proxy, "www.example.test", "A", "+short", "+tcp") == "192.0.2.1\n"


def test_the_table_file_is_reloaded_when_it_changes(files: dict[str, Path], dnsmasq: int) -> None:
    with running_proxy(files, dnsmasq) as port:
        assert dig(port, "static-server.default", "+short") == "240.0.0.3\n"
        change_and_wait_for_reload(port, files)


def change_and_wait_for_reload(proxy: int, files: dict[str, Path]) -> None:
    changed = json.loads(json.dumps(TABLE))
    changed["Services"][0]["VirtualIPs"] = ["240.0.0.33"]
    tmp = files["table"].with_suffix(".new")
    tmp.write_text(json.dumps(changed))
    tmp.replace(files["table"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if dig(proxy, "static-server.default", "+short") == "240.0.0.33\n":
            return
        time.sleep(0.2)
    raise AssertionError("the proxy kept the old table for 5 s")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loom", "dns-proxy", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_a_bad_table_file_is_one_line_naming_the_field(files: dict[str, Path]) -> None:
    bad = json.loads(json.dumps(TABLE))
    bad["Services"][0]["VirtualIPs"] = ["240.0.0.300"]
    files["table"].write_text(json.dumps(bad))
    out = run_cli("--table", str(files["table"]), "--listen", f"127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert out.stderr == (
        f"loom: table file {files['table']}: name table: "
        "Services[0].VirtualIPs[0]: expected an IPv4 or IPv6 address, "
        "got '240.0.0.300'\n"
    )


def test_a_taken_port_is_one_line(files: dict[str, Path], proxy: int) -> None:
    out = run_cli(
        "--table",
        str(files["table"]),
        "--listen",
        f"127.0.0.1:{proxy}",
        "--resolv-conf",
        str(files["resolv"]),
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        f"loom: cannot listen on 127.0.0.1:{proxy} (udp): Address already in use"
    )


def test_help_explains_the_table_sources_and_the_uid_exclusion() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for text in ("--server ADDR", "--table FILE", "--resolv-conf", "redirect-traffic"):
        assert text in out.stdout
