"""``loom local apply -f`` end to end (root): the examples' Kubernetes YAML, verbatim, through
the injector onto network-namespace pods with real Envoy sidecars and real iptables, driven
by the CLI as a reader would (``apply``, ``exec deploy/...``, ``get``, ``delete``). ACLs are on
(each service logs in with its service account), intentions default to allow as in the seed,
so a deny intention makes curl exit 52."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom.local import processes
from tests.support.mesh import free_port, wait_for

pytestmark = [pytest.mark.root, pytest.mark.envoy]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CURL = ["--", "curl", "--silent", "--max-time", "5", "http://static-server/"]


class Mesh:
    def __init__(self, env: dict[str, str], state: Path, prefix: str) -> None:
        self.env, self.state, self.prefix = env, state, prefix

    def loom(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loom", "local", *args], input=stdin,
                              capture_output=True, text=True, env=self.env, timeout=120)  # fmt: skip

    def ok(self, *args: str) -> str:
        out = self.loom(*args)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def curl_until(self, url_args: list[str], code: int, text: str | None) -> None:
        def attempt() -> bool:
            out = self.loom("exec", "deploy/static-client", *url_args)
            return out.returncode == code and (text is None or out.stdout.strip() == text)

        wait_for(attempt, timeout=20, what=f"curl {url_args[-1]} -> exit {code} {text!r}")

    def pods(self) -> dict[str, dict[str, str]]:
        return json.loads(self.state.joinpath("apply.json").read_text())["pods"]

    def netns(self) -> list[str]:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in listed.splitlines() if line.startswith(self.prefix)]

    def catalog(self) -> list[str]:
        out = subprocess.run([sys.executable, "-m", "loom", "catalog", "services"],
                             capture_output=True, text=True, env=self.env)  # fmt: skip
        return [s for s in out.stdout.split() if s != "consul"]


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    state = Path(f"/run/loom-apply-test-{os.getpid()}")
    prefix = f"la{os.getpid() % 100000}"
    http = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "LOOM_LOCAL_PREFIX": prefix, "LOOM_LOCAL_STATE_DIR": str(state),
           "LOOM_LOCAL_SUBNET": "10.252.0.0/16", "LOOM_LOCAL_DATA_DIR": "-",
           "LOOM_LOCAL_HTTP_ADDR": http, "LOOM_LOCAL_GRPC_ADDR": f"127.0.0.1:{free_port()}",
           "LOOM_HTTP_ADDR": http, "LOOM_HTTP_TOKEN_FILE": str(state / "management.token")}  # fmt: skip
    m = Mesh(env, state, prefix)
    try:
        m.ok("up", "--acl-default-policy", "allow")
        yield m
    finally:
        m.loom("down")
        assert not state.exists() or not any(state.iterdir())
        assert m.netns() == []
        assert not [p for p in os.listdir("/etc/netns") if p.startswith(prefix)]


def test_the_seed_server_and_client_answer_hello_world_by_kubernetes_name(mesh: Mesh) -> None:
    started = time.monotonic()
    out = mesh.ok("apply", "-f", str(EXAMPLES / "static-server.yaml"),
                  "-f", str(EXAMPLES / "static-client.yaml"))  # fmt: skip
    assert out.splitlines() == [
        "serviceaccount/static-server created", "serviceaccount/static-client created",
        "service/static-server created", "service/static-client created",
        "deployment.apps/static-server created", "deployment.apps/static-client created",
    ]  # fmt: skip
    mesh.curl_until(CURL, 0, '"hello world"')
    print(f"\nfigure: apply -> first successful request: {time.monotonic() - started:.2f} s")
    seen = mesh.loom(
        "exec", "deploy/static-client", "--", "curl", "--silent", "http://static-server/"
    )
    assert (seen.returncode, seen.stdout) == (0, '"hello world"\n')
    assert sorted(mesh.catalog()) == ["static-client", "static-client-sidecar-proxy",
                                      "static-server", "static-server-sidecar-proxy"]  # fmt: skip


def test_re_applying_the_same_files_changes_nothing(mesh: Mesh) -> None:
    before = mesh.pods()
    pids = {n: json.loads((mesh.state / "pods" / n / "pod.json").read_text())["app"]["pid"]
            for n in before}  # fmt: skip
    out = mesh.ok("apply", "-f", str(EXAMPLES / "static-server.yaml"),
                  "-f", str(EXAMPLES / "static-client.yaml"))  # fmt: skip
    assert all(line.endswith(" unchanged") for line in out.splitlines()), out
    assert mesh.pods() == before
    assert {n: json.loads((mesh.state / "pods" / n / "pod.json").read_text())["app"]["pid"]
            for n in before} == pids  # fmt: skip


def test_the_injected_pod_shows_connect_inject_status_injected(mesh: Mesh) -> None:
    text = mesh.ok("get", "pod", "deploy/static-server", "-o", "yaml")
    assert "consul.hashicorp.com/connect-inject-status: injected" in text
    assert "name: loom-dataplane" in text and "name: loom-connect-init" in text
    described = mesh.ok("describe", "pod", "deploy/static-server")
    assert "Decision:       injected" in described
    assert "annotation consul.hashicorp.com/connect-inject is 'true'" in described


def test_a_deny_intention_crd_makes_curl_exit_52_and_deleting_it_lets_traffic_through(
    mesh: Mesh,
) -> None:
    deny = str(EXAMPLES / "deny-static-client.yaml")
    assert mesh.ok("apply", "-f", deny).strip() == (
        "serviceintentions.consul.hashicorp.com/static-server created"
    )
    mesh.curl_until(CURL, 52, None)
    out = mesh.loom(
        "exec", "deploy/static-client", "--", "curl", "--silent", "http://static-server/"
    )
    assert out.returncode == 52
    assert out.stderr.strip() == "command terminated with exit code 52"
    mesh.ok("delete", "-f", deny)
    mesh.curl_until(CURL, 0, '"hello world"')


def test_a_changed_template_rolls_the_pods_and_the_multi_port_seed_answers(mesh: Mesh) -> None:
    old = {n for n, p in mesh.pods().items() if p["owner"].endswith("/static-client")}
    mesh.ok("apply", "-f", str(EXAMPLES / "multi-port.yaml"))
    out = mesh.ok("apply", "-f", str(EXAMPLES / "static-client-multi-port.yaml"))
    assert "deployment.apps/static-client configured" in out
    new = {n for n, p in mesh.pods().items() if p["owner"].endswith("/static-client")}
    assert len(new) == 1 and new.isdisjoint(old)
    assert not any((mesh.state / "pods" / n).exists() for n in old)
    mesh.curl_until(["--", "curl", "--silent", "localhost:1234"], 0, '"hello world"')
    mesh.curl_until(["--", "curl", "--silent", "localhost:2234"], 0, '"hello world from 9090"')
    env = mesh.ok("exec", "deploy/static-client", "--", "sh", "-c",
                  "echo $WEB_CONNECT_SERVICE_PORT $WEB_ADMIN_CONNECT_SERVICE_PORT")  # fmt: skip
    assert env.strip() == "1234 2234"


PROBED = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: probed}}
---
apiVersion: v1
kind: Pod
metadata:
  name: probed
  annotations: {{consul.hashicorp.com/connect-inject: 'true'}}
spec:
  serviceAccountName: probed
  containers:
  - name: probed
    image: hashicorp/http-echo
    args: [-text=ok, -listen=:8080]
    ports: [{{containerPort: 8080, name: http}}]
    readinessProbe:
      exec: {{command: [test, -e, {flag}]}}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      httpGet: {{path: /, port: http}}
      periodSeconds: 1
      failureThreshold: 2
"""


def test_readiness_probes_drive_the_catalog_health_and_liveness_restarts(mesh: Mesh) -> None:
    flag = mesh.state / "probed-ready"
    out = mesh.loom("apply", "-f", "-", stdin=PROBED.format(flag=flag))
    assert out.returncode == 0, out.stderr
    token = (mesh.state / "management.token").read_text().strip()

    def health() -> str:
        from loom.api.client import Client

        client = Client(mesh.env["LOOM_HTTP_ADDR"], timeout=5, token=token)
        return str(client.get("/v1/health/checks/probed")[0]["Status"])

    assert health() == "critical"  # not ready until the readiness probe passes
    assert mesh.ok("get", "pods", "probed").split()[6] == "1/2"
    flag.touch()
    wait_for(lambda: health() == "passing", what="the health check passing")
    assert mesh.ok("get", "pods", "probed").split()[6] == "2/2"
    flag.unlink()
    wait_for(lambda: health() == "critical", what="the health check critical again")
    rec = json.loads((mesh.state / "pods" / "probed" / "pod.json").read_text())
    os.kill(rec["containers"][0]["pid"], 9)
    wait_for(lambda: mesh.ok("get", "pods", "probed").split()[8] == "1", what="a restart")
    wait_for(lambda: mesh.loom("exec", "probed", "--", "curl", "-s", "localhost:8080").stdout
             == "ok\n", what="the restarted container answering")  # fmt: skip
    out = mesh.loom("delete", "-f", "-", stdin=PROBED.format(flag=flag))
    assert out.stdout.splitlines() == ['pod "probed" deleted', 'serviceaccount "probed" deleted']
    assert not (mesh.state / "pods" / "probed").exists()


VOLUMES = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: greeting}}
data: {{text: hello from a config map, mode: fast}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  volumes: [{{name: cfg, configMap: {{name: greeting}}}}]
  containers:
  - name: reader
    image: curlimages/curl
    command: [sh, -c, 'cat {target}/text; echo " ($MODE)"; exec sleep 3600']
    env: [{{name: MODE, valueFrom: {{configMapKeyRef: {{name: greeting, key: mode}}}}}}]
    volumeMounts: [{{name: cfg, mountPath: {target}, readOnly: true}}]
"""


def test_a_config_map_is_mounted_in_the_container_only_and_given_as_env(mesh: Mesh) -> None:
    target = mesh.state / "mnt"
    target.mkdir()
    try:
        text = VOLUMES.format(target=target)
        out = mesh.loom("apply", "-f", "-", stdin=text)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: mesh.ok("logs", "reader") == "hello from a config map (fast)\n",
                 what="the container reading its volume")  # fmt: skip
        seen = mesh.loom("exec", "reader", "--", "sh", "-c", f"ls {target}; touch {target}/x")
        assert seen.stdout.split() == ["mode", "text"]
        assert seen.returncode == 1 and "Read-only file system" in seen.stderr
        assert list(target.iterdir()) == []  # the host's directory is untouched
        mesh.loom("delete", "-f", "-", stdin=text)
        assert not (mesh.state / "pods" / "reader").exists()
    finally:
        target.rmdir()


HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5678}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: hashicorp/http-echo, args: [-text=db, -listen=:5678]}
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers: [{name: c, image: curlimages/curl, command: [sleep, '3600']}]
"""


def test_a_headless_service_and_its_statefulset_pods_have_kube_dns_names(mesh: Mesh) -> None:
    if shutil.which("dnsmasq") is None:
        pytest.skip("needs dnsmasq (the node's DNS server)")
    out = mesh.loom("apply", "-f", "-", stdin=HEADLESS)
    assert out.returncode == 0, out.stderr
    assert {"db-0", "db-1", "plain"} <= set(mesh.pods())
    for url in ("http://db-1.db.default.svc.cluster.local:5678/", "http://db:5678/"):
        seen = mesh.loom("exec", "plain", "--", "curl", "-s", "-m", "3", url)
        assert (seen.returncode, seen.stdout) == (0, "db\n"), seen.stderr
    mesh.loom("delete", "-f", "-", stdin=HEADLESS)
    assert "db.default.svc.cluster.local" not in (mesh.state / "hosts").read_text()


@pytest.mark.parametrize(
    ("manifest", "said"),
    [
        ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\n",
         "CronJob/nightly (<stdin> #2): kind CronJob (batch/v1) is not one"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\n"
         "spec: {containers: [{name: c, image: acme/unknown}]}\n",
         "image acme/unknown maps to no local program"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p2, annotations: "
         "{consul.hashicorp.com/connect-inject: 'yes'}}\n"
         "spec: {containers: [{name: c, image: nginx}]}\n", "the injector refused it"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p3}\n"
         "spec: {serviceAccountName: ghost, containers: [{name: c, image: curlimages/curl}]}\n",
         "ServiceAccount ghost does not exist"),
    ],
    ids=["unknown-kind", "unmapped-image", "invalid-annotation", "missing-service-account"],
)  # fmt: skip
def test_a_bad_manifest_is_refused_with_one_line_and_nothing_made(
    mesh: Mesh, manifest: str, said: str
) -> None:
    before_state = mesh.state.joinpath("apply.json").read_text()
    before_ns = mesh.netns()
    good = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: fresh}\n---\n"
    out = mesh.loom("apply", "-f", "-", stdin=good + manifest)
    assert out.returncode == 1
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and said in out.stderr, out.stderr
    assert mesh.state.joinpath("apply.json").read_text() == before_state
    assert mesh.netns() == before_ns


def test_a_pod_deleted_and_brought_back_by_apply_gets_its_own_uid_again(mesh: Mesh) -> None:
    def uids() -> dict[str, int]:
        return {n: json.loads((mesh.state / "pods" / n / "pod.json").read_text())["uid"]
                for n in mesh.pods()}  # fmt: skip

    before = uids()
    assert len(before) >= 2 and len(set(before.values())) == len(before)  # one UID per pod
    server = next(n for n in before if n.startswith("static-server-"))
    mesh.ok("delete", "pod", server)
    assert server not in uids()
    mesh.ok("apply", "-f", str(EXAMPLES / "static-server.yaml"))
    assert uids() == before


def test_delete_leaves_no_namespace_process_or_registration(mesh: Mesh) -> None:
    pids = []
    for name in mesh.pods():
        rec = json.loads((mesh.state / "pods" / name / "pod.json").read_text())
        pids += [c["pid"] for c in rec["containers"]] + [s["pid"] for s in rec["sidecars"]]
    some = next(iter(mesh.pods()))
    assert mesh.ok("delete", "pod", some).strip() == f'pod "{some}" deleted'
    for name in ("static-server", "static-client-multi-port", "multi-port"):
        mesh.ok("delete", "-f", str(EXAMPLES / f"{name}.yaml"))
    assert mesh.pods() == {}
    assert json.loads(mesh.state.joinpath("apply.json").read_text())["objects"] == {}
    assert [n for n in mesh.netns() if "-pod-" in n] == []
    assert not [p for p in os.listdir("/etc/netns") if p.startswith(mesh.prefix + "-pod-")]
    assert not [p for p in pids if processes.alive(p)]  # a zombie awaiting init is not alive
    assert mesh.catalog() == []
