"""`loom local` end to end (root): pods as network namespaces, transparent proxy through real
iptables, real Envoy sidecars, the DNS proxy answering glibc's resolver. Seeds 000 and 001.
ACLs are on (each sidecar with its pod's login token, the tests with the management token)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.local.mesh import LocalError, LocalMesh
from tests.support.localmesh import ECHO, curl, exec_in, local_settings, seed_pair
from tests.support.mesh import wait_for

pytestmark = [pytest.mark.root, pytest.mark.envoy]


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    # ACLs on (the default, deny) with intentions defaulting to allow, so these tests see the
    # seeds' default-allow behaviour (exit 52 on a deny); test_local_acl.py has the
    # default-deny mesh.
    settings = local_settings("lt", "10.251.0.0/16", default_policy="allow")
    settings.net.state_dir.mkdir(mode=0o755)
    with seed_pair(settings) as m:
        yield m


def intention(mesh: LocalMesh, src: str, dst: str, action: str | None) -> None:
    q = f"/v1/connect/intentions/exact?source={src}&destination={dst}"
    if action is None:
        mesh.client().delete(q.split("?")[0], source=src, destination=dst)
    else:
        mesh.client().put(q.split("?")[0], {"Action": action}, source=src, destination=dst)


def test_the_client_reaches_static_server_by_name_through_the_mesh(mesh: LocalMesh) -> None:
    for url in ("http://static-server/", "http://static-server.default.svc.cluster.local/",
                "http://static-server.virtual.consul/"):  # fmt: skip
        assert curl(mesh, "static-client", url) == (0, "hello world\n")


def test_a_deny_intention_makes_curl_exit_52_and_deleting_it_restores_traffic(
    mesh: LocalMesh,
) -> None:
    intention(mesh, "static-client", "static-server", "deny")
    wait_for(lambda: curl(mesh, "static-client", "http://static-server/")[0] == 52, 10, "exit 52")
    intention(mesh, "static-client", "static-server", None)
    wait_for(
        lambda: curl(mesh, "static-client", "http://static-server/") == (0, "hello world\n"),
        10,
        "hello",
    )


def test_dialing_the_pod_ip_directly_also_goes_through_the_mesh(mesh: LocalMesh) -> None:
    ip = mesh.record("static-server")["ip"]  # type: ignore[index]
    assert curl(mesh, "static-client", f"http://{ip}:8080/") == (0, "hello world\n")
    intention(mesh, "static-client", "static-server", "deny")
    try:
        wait_for(lambda: curl(mesh, "static-client", f"http://{ip}:8080/")[0] == 52, 10, "denied")
    finally:
        intention(mesh, "static-client", "static-server", None)


def test_glibc_resolves_mesh_names_through_the_redirected_dns_proxy(mesh: LocalMesh) -> None:
    code = "import socket; print(socket.getaddrinfo('static-server', 80, socket.AF_INET)[0][4][0])"
    out = exec_in(mesh, "static-client", sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr
    vip = mesh.client().get("/v1/catalog/service/static-server")[0]["ServiceTaggedAddresses"][
        "virtual"
    ]["Address"]
    assert out.stdout.strip() == vip


def test_strict_mtls_rejects_plain_text_and_permissive_lets_it_in(mesh: LocalMesh) -> None:
    # A client excluding the server's address from redirection dials it in plain text.
    ip = mesh.record("static-server")["ip"]  # type: ignore[index]
    mesh.run(
        "outsider", [], {"transparent-proxy-exclude-outbound-cidrs": f"{ip}/32"}, ["sleep", "3600"]
    )
    try:
        rc, out = curl(mesh, "outsider", f"http://{ip}:8080/")
        assert rc != 0 and "hello" not in out  # strict: the inbound redirect sends it to mTLS
        mesh.client().put("/v1/config", {"Kind": "service-defaults", "Name": "static-server",
                                         "MutualTLSMode": "permissive"})  # fmt: skip
        wait_for(
            lambda: curl(mesh, "outsider", f"http://{ip}:8080/") == (0, "hello world\n"),
            10,
            "permissive",
        )
    finally:
        mesh.client().delete("/v1/config/service-defaults/static-server")
        mesh.rm("outsider")


def test_an_excluded_inbound_port_reaches_the_app_directly(mesh: LocalMesh) -> None:
    mesh.run("side", [8080], {"transparent-proxy-exclude-inbound-ports": "9090"},
             ["sh", "-c", f"{' '.join(ECHO)} -text main -listen :8080 & exec {' '.join(ECHO)} -text direct -listen :9090"])  # fmt: skip
    try:
        ip = mesh.record("side")["ip"]  # type: ignore[index]
        # From a pod that bypasses the mesh for this address: 9090 answers in plain text,
        # 8080 is redirected to the strict mTLS listener and refuses it.
        mesh.run(
            "probe", [], {"transparent-proxy-exclude-outbound-cidrs": f"{ip}/32"}, ["sleep", "3600"]
        )
        assert curl(mesh, "probe", f"http://{ip}:9090/") == (0, "direct\n")
        assert curl(mesh, "probe", f"http://{ip}:8080/")[0] != 0
    finally:
        for name in ("probe", "side"):
            if mesh.record(name) is not None:
                mesh.rm(name)


def test_multi_port_pod_serves_both_services_to_explicit_upstreams(mesh: LocalMesh) -> None:
    both = (f"{' '.join(ECHO)} -text 'hello world' -listen :8080 & "
            f"exec {' '.join(ECHO)} -text 'hello world from 9090' -listen :9090")  # fmt: skip
    mesh.run("web", [8080, 9090], {"transparent-proxy": "false", "connect-service": "web,web-admin",
                                   "connect-service-port": "8080,9090"}, ["sh", "-c", both])  # fmt: skip
    mesh.run(
        "mp-client", [], {"connect-service-upstreams": "web:1234,web-admin:2234"}, ["sleep", "3600"]
    )
    try:
        assert curl(mesh, "mp-client", "http://localhost:1234") == (0, "hello world\n")
        assert curl(mesh, "mp-client", "http://localhost:2234") == (0, "hello world from 9090\n")
    finally:
        mesh.rm("mp-client")
        mesh.rm("web")


def test_transparent_proxy_is_refused_for_a_multi_port_pod_before_anything_is_made(
    mesh: LocalMesh,
) -> None:
    before = set(mesh.names())
    with pytest.raises(Exception, match="transparent"):
        mesh.run(
            "bad-mp",
            [8080, 9090],
            {"connect-service": "a,b", "connect-service-port": "8080,9090"},
            ["sleep", "1"],
        )
    assert set(mesh.names()) == before


def test_a_failed_run_leaves_nothing_behind(mesh: LocalMesh) -> None:
    def ours() -> list[str]:  # only this test's namespaces: other work may share the machine
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return sorted(
            line.split()[0] for line in out.splitlines() if line.startswith(mesh.s.net.prefix)
        )

    before_ns = ours()
    services_before = set(mesh.client().get("/v1/agent/services"))
    with pytest.raises(LocalError, match="exited at once"):
        mesh.run("broken", [8080], {}, ["sh", "-c", "exit 3"])
    assert ours() == before_ns
    assert set(mesh.client().get("/v1/agent/services")) == services_before
    assert not Path(f"/etc/netns/{mesh.s.net.pod_netns('broken')}").exists()
    assert mesh.record("broken") is None
    assert "broken" not in mesh.names()


def test_the_node_bridge_keeps_an_address_of_its_own_whatever_pods_join(mesh: LocalMesh) -> None:
    # A bridge left to choose takes its lowest port's MAC and changes it when a pod with a
    # lower one joins or that pod leaves; pods that cached the old one lose the node DNS (and
    # Envoy its external hosts) until their ARP entry expires, up to about 50 s.
    out = subprocess.run(["ip", "-n", mesh.s.net.node_netns, "-j", "link", "show"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    links = json.loads(out)
    bridge = next(link["address"] for link in links if link["ifname"] == mesh.s.net.bridge)
    ports = [link["address"] for link in links if link.get("master") == mesh.s.net.bridge]
    assert len(ports) >= 2  # static-server and static-client
    assert bridge not in ports


def _external_diagnostics(mesh: LocalMesh, n: int) -> str:
    """What the client pod sees when an external host does not answer, so a failing run
    explains itself. (It failed about one run in five while the node bridge changed its MAC
    address as pods joined: the client's stale ARP entry cut it off from the node DNS.)"""
    host = f"mysql-instance{n}.example.test"
    work = Path(mesh.record("static-client")["sidecars"][0]["work"])  # type: ignore[index]
    admin = (work / "admin-address").read_text().strip()
    stats = exec_in(mesh, "static-client", "curl", "-s", f"http://{admin}/stats").stdout
    dump = exec_in(
        mesh,
        "static-client",
        "curl",
        "-s",
        f"http://{admin}/config_dump?resource=dynamic_listeners",
    )
    return "\n".join([
        f"curl: {curl(mesh, 'static-client', f'http://{host}:3306/')}",
        f"dig in pod: {exec_in(mesh, 'static-client', 'dig', '+short', host).stdout.strip()!r}",
        f"outbound listener has a chain for {host}: {host in dump.stdout}",
        "envoy stats: " + "; ".join(line for line in stats.splitlines()
                                    if ("external" in line or "dns" in line) and not line.endswith(": 0")),
        f"node DNS hosts file: {mesh.s.hosts_file.read_text()!r}",
    ])  # fmt: skip


def test_two_external_databases_on_one_port_are_told_apart_by_their_vips(mesh: LocalMesh) -> None:
    # Seed 003, "Automatic VIP allocation where possible": db1 and db2 both listen on 3306
    # outside the mesh's knowledge; the node's DNS knows their real addresses. The app dials
    # them by name; the DNS proxy answers each with its own VIP; Envoy routes VIP:3306 to the
    # right host (resolved through the node DNS) - no port-wide passthrough needed.
    for n in (1, 2):
        mesh.run(
            f"db{n}",
            [3306],
            {"transparent-proxy": "false"},
            [*ECHO, "-text", f"db{n}", "-listen", ":3306"],
        )
        mesh.add_host(f"mysql-instance{n}.example.test", mesh.record(f"db{n}")["ip"])  # type: ignore[index]
        mesh.client().put("/v1/config", {"Kind": "external-service", "Name": f"ext-db{n}",
                                         "Hosts": [f"mysql-instance{n}.example.test"],
                                         "Ports": [{"Number": 3306}]})  # fmt: skip
    try:
        for n in (1, 2):
            url = f"http://mysql-instance{n}.example.test:3306/"
            try:
                wait_for(
                    lambda url=url, n=n: curl(mesh, "static-client", url) == (0, f"db{n}\n"),
                    45,
                    url,
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{_external_diagnostics(mesh, n)}") from None
        code = "import socket; print(socket.getaddrinfo('mysql-instance1.example.test', 3306, socket.AF_INET)[0][4][0])"
        out = exec_in(mesh, "static-client", sys.executable, "-c", code)
        assert out.stdout.strip().startswith("240.240.")
    finally:
        for n in (1, 2):
            mesh.client().delete(f"/v1/config/external-service/ext-db{n}")
            mesh.rm(f"db{n}")
