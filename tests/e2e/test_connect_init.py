"""`loom k8s connect-init` against a real `loom server --dev` process.

The registrations are the ones the planner derives from the golden seed pods
(`service_registrations`), PUT to the server as the Kubernetes controller would; there is no
Kubernetes here, so the test plays the controller (and the downward API, with flags). The
redirect rules go into a network namespace each test makes (and deletes), as connect-init
installs them in-process: no `loom connect redirect-traffic` subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loom.inject import InjectSettings, NamespaceInfo, plan_workload
from loom.inject.registration import service_registrations
from loom.k8s.connect_init import ConnectInitConfig, run
from loom.k8s.manifests import load_documents, pod_templates
from loom.redirect import redirect_rules
from loom.redirect.applying import saved_rules
from tests.unit.inject.golden_cases import CASE_DIR


def seed_plan(case: str, values: InjectSettings | None = None):
    docs = load_documents((CASE_DIR / f"{case}.yaml").read_text())
    pod = next(pod for doc in docs for _, pod, _ in pod_templates(doc))
    return plan_workload(pod, NamespaceInfo("default"), values or InjectSettings())


class ConnectInit:
    def __init__(self, server, out: Path, pod: str, *extra: str, timeout: float = 30) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "loom", "k8s", "connect-init",
                "--http-addr", server.http, "--pod-name", pod, "--pod-namespace", "default",
                "--output-dir", str(out), "--timeout", str(timeout), "--log-interval", "0.2",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: list[str] = []

    def read_until(self, text: str, limit: int = 200) -> None:
        assert self.proc.stderr is not None
        for _ in range(limit):
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"never saw {text!r} in {self.lines}")

    def finish(self, timeout: float = 20) -> tuple[int, str]:
        try:
            _, rest = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, rest = self.proc.communicate()
        return self.proc.returncode, "".join(self.lines) + rest


@pytest.fixture
def procs():
    started: list[ConnectInit] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
        p.proc.communicate()


def test_it_waits_for_a_registration_that_appears_later_then_writes_the_proxy_id(
    loom_server, tmp_path, procs
) -> None:
    plan = seed_plan("seed-static-server-pod")
    init = ConnectInit(loom_server, tmp_path, "static-server-7d9f", "--skip-redirect", "--",
                       *plan.redirect.to_flags())  # fmt: skip
    procs.append(init)
    init.read_until("is not registered yet")
    init.read_until("is not registered yet")  # still waiting, a line every 0.2 s
    assert init.proc.poll() is None
    [body] = service_registrations(plan, "static-server-7d9f", "default", "10.1.0.7")
    loom_server.put("/v1/agent/service/register", body)
    code, err = init.finish()
    assert code == 0, err
    proxy_id = "static-server-7d9f-static-server-sidecar-proxy"
    assert (tmp_path / "proxyid").read_text() == proxy_id
    identity = json.loads((tmp_path / "identity.json").read_text())
    assert identity["ServiceID"] == "static-server-7d9f-static-server"
    assert identity["ProxyID"] == proxy_id
    assert "skipping traffic redirection (--skip-redirect)" in err
    # The sidecar registration carries what the plan asked for.
    sidecar = loom_server.get(f"/v1/agent/service/{proxy_id}")
    assert sidecar["Kind"] == "connect-proxy" and sidecar["Port"] == 20000
    assert sidecar["Proxy"]["Mode"] == "transparent"
    assert sidecar["Proxy"]["LocalServicePort"] == 8080


def test_it_fails_with_a_clear_message_when_the_registration_never_appears(
    loom_server, tmp_path, procs
) -> None:
    init = ConnectInit(loom_server, tmp_path, "ghost", timeout=1.5)
    procs.append(init)
    started = time.monotonic()
    code, err = init.finish()
    assert code == 1
    assert time.monotonic() - started >= 1.5
    assert "connect-init: waiting (0s of 1.5s): " in err
    assert err.splitlines()[-1] == (
        "loom: timed out after 1.5s waiting for the registration of pod default/ghost: "
        "the service of pod default/ghost is not registered yet"
    )
    assert not (tmp_path / "proxyid").exists()


def test_a_service_without_its_sidecar_is_reported_as_such(loom_server, tmp_path, procs) -> None:
    [body] = service_registrations(seed_plan("seed-static-server-pod"), "lonely", "default", "")
    del body["Connect"]
    loom_server.put("/v1/agent/service/register", body)
    init = ConnectInit(loom_server, tmp_path, "lonely", timeout=1)
    procs.append(init)
    code, err = init.finish()
    assert code == 1
    assert err.splitlines()[-1].endswith(
        "service lonely-static-server is registered but its sidecar proxy is not yet"
    )


def test_each_init_container_of_a_multi_port_pod_finds_its_own_service(
    loom_server, tmp_path, procs
) -> None:
    plan = seed_plan("seed-multiport-web")
    for body in service_registrations(plan, "web-5c4f", "default", "10.1.0.8"):
        loom_server.put("/v1/agent/service/register", body)
    for service in ("web", "web-admin"):
        init = ConnectInit(loom_server, tmp_path, "web-5c4f", "--service-name", service)
        procs.append(init)
        code, err = init.finish()
        assert code == 0, err
    assert (tmp_path / "proxyid-web").read_text() == "web-5c4f-web-sidecar-proxy"
    assert (tmp_path / "proxyid-web-admin").read_text() == "web-5c4f-web-admin-sidecar-proxy"
    admin_proxy = loom_server.get("/v1/agent/service/web-5c4f-web-admin-sidecar-proxy")
    assert admin_proxy["Port"] == 20001
    # Without --service-name the pod's two services are ambiguous: a clear error, at once.
    init = ConnectInit(loom_server, tmp_path, "web-5c4f")
    procs.append(init)
    code, err = init.finish()
    assert code == 1
    assert "has several services registered (web, web-admin)" in err.splitlines()[-1]


def test_the_plans_redirect_flags_are_accepted_by_redirect_traffic() -> None:
    docs = load_documents((CASE_DIR / "tproxy-exclusions.yaml").read_text())
    pod = next(pod for doc in docs for _, pod, _ in pod_templates(doc))
    flags = plan_workload(pod, NamespaceInfo("default"), InjectSettings()).redirect.to_flags()
    proc = subprocess.run(
        [sys.executable, "-m", "loom", "connect", "redirect-traffic", "--print", *flags],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for expected in ("--dport 8081", "--dport 5432", "10.0.0.0/8", "--uid-owner 1001", "5995"):
        assert expected in proc.stdout, expected


@pytest.mark.root
def test_with_transparent_proxy_it_installs_the_redirect_rules(
    loom_server, tmp_path, procs
) -> None:
    plan = seed_plan("seed-static-server-pod")
    [body] = service_registrations(plan, "tproxy-pod", "default", "10.1.0.9")
    loom_server.put("/v1/agent/service/register", body)
    netns = f"lt{os.getpid()}ci"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        # --netns applies the rules in the test's namespace while connect-init itself talks
        # to the server on this host's loopback.
        init = ConnectInit(loom_server, tmp_path, "tproxy-pod", f"--netns={netns}", "--",
                           *plan.redirect.to_flags())  # fmt: skip
        procs.append(init)
        code, err = init.finish()
        assert code == 0, err
        assert "traffic redirection installed" in err
        rules = subprocess.run(
            ["ip", "netns", "exec", netns, "iptables", "-t", "nat", "-S"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        assert "-N CONSUL_PROXY_INBOUND" in rules
        assert "--uid-owner 5995" in rules
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


def test_bad_redirect_flags_fail_at_once_in_one_line(loom_server, tmp_path, procs) -> None:
    init = ConnectInit(loom_server, tmp_path, "any", "--", "--proxy-uid=5995", "--dns-port=0")
    procs.append(init)
    code, err = init.finish()
    assert code == 2
    assert err.splitlines() == ["loom: --dns-port 0: a port is a number from 1 to 65535"]


@pytest.mark.root
def test_connect_init_installs_the_plans_rules_in_process_in_the_namespace_given(
    loom_server, tmp_path
) -> None:
    plan = seed_plan("tproxy-exclusions")
    assert plan.redirect is not None
    [body] = service_registrations(plan, "excluded-0", "default", "10.1.0.10")
    loom_server.put("/v1/agent/service/register", body)
    netns = f"lt{os.getpid()}cip"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        config = ConnectInitConfig(
            http_addr=loom_server.http,
            pod_name="excluded-0",
            pod_namespace="default",
            output_dir=tmp_path,
            timeout=30,
            redirect=plan.redirect,
            redirect_netns=netns,
        )
        lines: list[str] = []
        found = asyncio.run(run(config, lines.append))  # in this process
        assert found.proxy_id == "excluded-0-app-sidecar-proxy"
        assert f"redirect rules installed in network namespace {netns} (IPv4; IPv6 " in lines[-1]
        wanted = redirect_rules(plan.redirect, 4).render().splitlines()
        installed = saved_rules(4, netns).splitlines()
        assert sorted(x for x in installed if x.startswith("-A ")) == sorted(
            x for x in wanted if x.startswith("-A ")
        )
        assert "-A CONSUL_PROXY_OUTPUT -m owner --uid-owner 1002 -j RETURN" in installed
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


@pytest.mark.root
def test_a_redirection_that_cannot_be_installed_fails_connect_init_in_one_line(
    loom_server, tmp_path, procs
) -> None:
    plan = seed_plan("seed-static-server-pod")
    [body] = service_registrations(plan, "nowhere-pod", "default", "10.1.0.11")
    loom_server.put("/v1/agent/service/register", body)
    missing = f"lt{os.getpid()}gone"
    init = ConnectInit(loom_server, tmp_path, "nowhere-pod", f"--netns={missing}", "--",
                       *plan.redirect.to_flags())  # fmt: skip
    procs.append(init)
    code, err = init.finish()
    assert code == 1
    assert err.splitlines()[-1] == (
        f"loom: redirect-traffic failed: no network namespace named {missing!r} "
        "(see ip netns list)"
    )
    assert (tmp_path / "proxyid").exists()  # the identity is written before redirecting


async def test_an_unreachable_server_is_what_the_timeout_says_it_was_waiting_for(
    tmp_path: Path,
) -> None:
    from loom.k8s.connect_init import ConnectInitConfig, wait_for_registration
    from loom.k8s.errors import ConnectInitError
    from tests.support.mesh import free_port

    port = free_port()
    lines: list[str] = []
    config = ConnectInitConfig(f"127.0.0.1:{port}", "web-1", "default", tmp_path,
                               timeout=0.6, log_interval=0.2, poll_interval=0.1)
    with pytest.raises(ConnectInitError) as caught:
        await wait_for_registration(config, lines.append)
    assert str(caught.value) == (
        "timed out after 0.6s waiting for the registration of pod default/web-1: "
        f"server 127.0.0.1:{port} unreachable: Connection refused")
    assert lines[0] == "waiting (0s of 0.6s): no answer from the server yet"
    assert lines[-1].endswith(f"server 127.0.0.1:{port} unreachable: Connection refused")
