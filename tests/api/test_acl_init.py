"""`loom k8s acl-init` (what `loom install`'s Job runs) against a real `loom server` process.

The API server the auth method it makes sends TokenReviews to is the HTTPS stand-in of
``tests.support.kube_standin`` (CI has no Kubernetes; see ``test_acl_kubernetes_login.py``,
whose helpers this reuses). The Secrets are files, as the Job mounts them. Checked: a pod
logs in through the method it made and gets its ServiceAccount's service identity; the
controller's token can do the controller's work (register, deregister, delete a login token)
and write the config entries of the CRDs, but has no operator rights; a second run changes
nothing; a
wrong management token is refused with a one-line error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_acl_kubernetes_login import METHOD, ROOT, sa_jwt
from tests.support.kube_standin import KubeStandIn, authenticated
from tests.support.mesh import free_udp_tcp_port, wait_for
from tests.support.server import ServerProcess, acl_server

CONTROLLER = str(uuid.uuid4())
DIG = shutil.which("dig")


class Install:
    def __init__(self, server: ServerProcess, kube: KubeStandIn, tmp: Path) -> None:
        self.server, self.kube, self.tmp = server, kube, tmp
        for name, text in (("management", ROOT), ("ca.crt", kube.ca_pem),
                           ("reviewer", kube.reviewer_jwt), ("controller", CONTROLLER)):  # fmt: skip
            (tmp / name).write_text(text)

    def acl_init(self, management: str = "management") -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "loom", "k8s", "acl-init",
                f"--http-addr={self.server.http}", f"--token-file={self.tmp / management}",
                f"--kubernetes-host={self.kube.host}", f"--kubernetes-ca-file={self.tmp / 'ca.crt'}",
                f"--reviewer-jwt-file={self.tmp / 'reviewer'}",
                f"--controller-token-file={self.tmp / 'controller'}", "--timeout=10"]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def call(self, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, out, _ = self.server.request(method, path, body, {"X-Consul-Token": token})
        return status, out

    def root(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.call(ROOT, method, path, body)
        assert status == 200, (path, status, out)
        return out


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    kube = KubeStandIn(sa_jwt("loom", "loom-auth-method"))
    try:
        with acl_server(ROOT) as server:
            yield Install(server, kube, tmp_path)
    finally:
        kube.close()


def test_acl_init_makes_the_auth_method_a_pod_logs_in_through(install: Install) -> None:
    out = install.acl_init()
    assert out.returncode == 0, out.stderr
    method = install.root("GET", f"/v1/acl/auth-method/{METHOD}")
    assert method["Type"] == "kubernetes"
    assert method["Config"]["Host"] == install.kube.host
    assert method["Config"]["ServiceAccountJWT"] == install.kube.reviewer_jwt
    [rule] = install.root("GET", f"/v1/acl/binding-rules?authmethod={METHOD}")
    assert (rule["BindType"], rule["BindName"]) == ("service", "${serviceaccount.name}")
    pod = sa_jwt("default", "web")
    install.kube.answers[pod] = authenticated("default", "web")
    status, token = install.call("", "POST", "/v1/acl/login",
                                 {"AuthMethod": METHOD, "BearerToken": pod})  # fmt: skip
    assert status == 200, token
    assert token["ServiceIdentities"] == [{"ServiceName": "web"}]


def test_the_controllers_token_does_the_controllers_work_and_no_more(install: Install) -> None:
    assert install.acl_init().returncode == 0
    reg = {"Node": "k8s-sync", "Address": "10.0.0.1",
           "Service": {"ID": "web-1", "Service": "web", "Port": 8080}}  # fmt: skip
    assert install.call(CONTROLLER, "PUT", "/v1/catalog/register", reg)[0] == 200
    dereg = {"Node": "k8s-sync", "ServiceID": "web-1"}
    assert install.call(CONTROLLER, "PUT", "/v1/catalog/deregister", dereg)[0] == 200
    pod = sa_jwt("default", "web")
    install.kube.answers[pod] = authenticated("default", "web")
    _, login = install.call("", "POST", "/v1/acl/login", {"AuthMethod": METHOD, "BearerToken": pod})
    status, tokens = install.call(CONTROLLER, "GET", f"/v1/acl/tokens?authmethod={METHOD}")
    assert status == 200 and [t["AccessorID"] for t in tokens] == [login["AccessorID"]]
    path = f"/v1/acl/token/{login['AccessorID']}"
    assert install.call(CONTROLLER, "DELETE", path)[0] == 200
    # The config entries of the CRDs (loom k8s controller --crds), as consul-k8s's controller.
    for body in (
        {"Kind": "proxy-defaults", "Name": "global"},
        {"Kind": "mesh", "Name": "mesh"},
        {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
        {"Kind": "service-intentions", "Name": "web",
         "Sources": [{"Name": "a", "Action": "allow"}]},
    ):  # fmt: skip
        status, answer = install.call(CONTROLLER, "PUT", "/v1/config", body)
        assert status == 200, (body, status, answer)
    status, answer = install.call(CONTROLLER, "GET", "/v1/connect/ca/configuration")
    assert status == 403, (status, answer)  # no operator rights
    # acl:write (needed to delete login tokens) also lets it write policies and tokens, as
    # consul-k8s's connect-injector token can: Consul's rules have no narrower grant.


def test_a_second_run_changes_nothing(install: Install) -> None:
    assert install.acl_init().returncode == 0
    before = [install.root("GET", p) for p in ("/v1/acl/auth-methods", "/v1/acl/binding-rules",
                                                "/v1/acl/policies", "/v1/acl/tokens")]  # fmt: skip
    again = install.acl_init()
    assert again.returncode == 0, again.stderr
    after = [install.root("GET", p) for p in ("/v1/acl/auth-methods", "/v1/acl/binding-rules",
                                               "/v1/acl/policies", "/v1/acl/tokens")]  # fmt: skip
    ids = [sorted(r.get("ID") or r.get("AccessorID") or r["Name"] for r in rows) for rows in before]
    assert ids == [sorted(r.get("ID") or r.get("AccessorID") or r["Name"] for r in rows)
                   for rows in after]  # fmt: skip


def test_a_wrong_management_token_is_refused_in_one_line(install: Install) -> None:
    (install.tmp / "wrong").write_text(str(uuid.uuid4()))
    out = install.acl_init("wrong")
    assert out.returncode != 0
    assert "the management token is refused" in out.stderr and "ACL not found" in out.stderr
    assert "Traceback" not in out.stderr
    assert install.root("GET", "/v1/acl/auth-methods") == []


def _dig(port: int, name: str) -> str:
    out = subprocess.run([DIG or "dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1",
                          name, "A", "+noall", "+comments", "+answer"],
                         capture_output=True, text=True, timeout=15)  # fmt: skip
    return out.stdout


@contextlib.contextmanager
def _dns_proxy(install: Install) -> Iterator[int]:
    """A real ``loom dns-proxy`` watching the server with no token (as in the server pod)."""
    port = free_udp_tcp_port()
    resolv = install.tmp / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "LOOM_"))}
    log = install.tmp / f"dns-{port}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loom", "dns-proxy", f"--server={install.server.http}",
             f"--listen=127.0.0.1:{port}", f"--resolv-conf={resolv}", "--upstream=127.0.0.1:9"],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip
    try:
        wait_for(lambda: "status:" in _dig(port, "readiness.invalid"), 20, "the DNS proxy")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(DIG is None, reason="needs dig (apt-get install dnsutils)")
def test_the_dns_proxy_without_a_token_answers_under_default_deny_after_acl_init(
    install: Install,
) -> None:
    install.root("PUT", "/v1/agent/service/register",
                 {"Name": "web", "Address": "10.1.2.3", "Port": 80})  # fmt: skip
    # Before: the anonymous token sees nothing, so neither does the DNS proxy.
    status, services = install.call("", "GET", "/v1/catalog/services")
    assert status == 200 and "web" not in services
    with _dns_proxy(install) as port:
        # Not a mesh name to it: not answered (forwarded to a resolver that is not there).
        before = _dig(port, "web.service.consul")
        assert "status: NOERROR" not in before and "ANSWER: 0" in before, before
    out = install.acl_init()
    assert out.returncode == 0, out.stderr
    anonymous = install.root("GET", "/v1/acl/token/00000000-0000-0000-0000-000000000002")
    assert anonymous["TemplatedPolicies"] == [{"TemplateName": "builtin/dns"}]
    # Least privilege: read only. The anonymous token still may not write anything.
    status, _ = install.call("", "PUT", "/v1/agent/service/register", {"Name": "evil"})
    assert status == 403
    status, _ = install.call("", "PUT", "/v1/kv/x", "y")
    assert status == 403
    with _dns_proxy(install) as port:
        wait_for(lambda: "10.1.2.3" in _dig(port, "web.service.consul"), 20, "web's address")
        answer = _dig(port, "web.service.consul")
        assert "status: NOERROR" in answer and "flags: qr aa" in answer, answer
    # A rerun keeps the one templated policy.
    assert install.acl_init().returncode == 0
    again = install.root("GET", "/v1/acl/token/00000000-0000-0000-0000-000000000002")
    assert again["TemplatedPolicies"] == [{"TemplateName": "builtin/dns"}]
