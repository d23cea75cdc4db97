"""The config-entry controller and leader election against a real kube-apiserver.

``loom install``'s CustomResourceDefinitions are applied to a real API server
(``KUBEBUILDER_ASSETS``), a real ``loom server --dev`` runs, and ``loom k8s controller --crds``
runs as a process with a kubeconfig: consul-k8s-style manifests applied with kubectl become
config entries, get their ``Synced`` condition (False with the server's reason when Loom
refuses them), keep entries they did not make alone, and take their entries with them when
deleted (finalizer). Two controllers with ``--leader-elect``: one leads, the leader is killed,
the standby takes the Lease over within the lease duration and registrations keep flowing.
And the endpoints controller against an API server whose watches expire (410s, compaction):
readiness flips still reach the catalog at once.
"""

from __future__ import annotations

import datetime
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.k8s.crds import custom_resource_definitions
from loom.k8s.manifests import dump_documents
from tests.support.kubeapi import KubeApi, requires_kube, start_kube
from tests.support.server import ServerProcess, start_server
from tests.unit.inject.test_controller import injected_pod

pytestmark = requires_kube
CRS = "/apis/consul.hashicorp.com/v1alpha1/namespaces/default"


def kubectl(kube: KubeApi, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kube.kubeconfig()}", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApi]:
    with start_kube() as api:
        crds = dump_documents(custom_resource_definitions({"app.kubernetes.io/name": "loom"}))
        done = kubectl(api, "apply", "--server-side", "-f", "-", stdin=crds)
        assert done.returncode == 0, done.stderr
        done = kubectl(api, "wait", "--for=condition=established", "--timeout=30s", "crd", "--all")
        assert done.returncode == 0, done.stderr
        api.service_account("default")
        yield api


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


class Controllers:
    """``loom k8s controller`` processes, stopped at the end."""

    def __init__(self, kube: KubeApi, server: ServerProcess, tmp: Path) -> None:
        self.kube, self.server, self.tmp = kube, server, tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, *extra: str) -> int:
        log = self.tmp / f"controller-{len(self.procs)}.log"
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "loom", "k8s", "controller",
                 f"--kubeconfig={self.kube.kubeconfig()}", f"--http-addr={self.server.http}",
                 "--resync=5", *extra],
                stdout=out, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        self.logs.append(log)
        return len(self.procs) - 1

    def log(self, index: int) -> str:
        return self.logs[index].read_text()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def controllers(kube: KubeApi, server: ServerProcess, tmp_path: Path) -> Iterator[Controllers]:
    running = Controllers(kube, server, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def wait_for(check: Callable[[], Any], what: str, logs: Callable[[], str], timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)  # a polling interval: the loop ends when the check passes
    raise AssertionError(f"timed out waiting for {what}; controller log:\n{logs()[-3000:]}")


def apply(kube: KubeApi, manifest: str) -> None:
    done = kubectl(kube, "apply", "-f", "-", stdin=manifest)
    assert done.returncode == 0, done.stderr


def synced(kube: KubeApi, plural: str, name: str) -> dict[str, Any] | None:
    status, body = kube.call("GET", f"{CRS}/{plural}/{name}")
    if status != 200:
        return None
    conditions = (body.get("status") or {}).get("conditions") or []
    return body if any(c["type"] == "Synced" for c in conditions) else None


def entry(server: ServerProcess, kind: str, name: str) -> dict[str, Any] | None:
    status, body, _ = server.request("GET", f"/v1/config/{kind}/{name}")
    return body if status == 200 else None


def test_consul_k8s_manifests_become_config_entries_with_synced_conditions_and_finalizers(
    kube: KubeApi, server: ServerProcess, controllers: Controllers
) -> None:
    run = controllers.start("--crds")
    logs = lambda: controllers.log(run)  # noqa: E731
    apply(kube, """
apiVersion: consul.hashicorp.com/v1alpha1
kind: ServiceDefaults
metadata: {name: web}
spec: {protocol: http}
---
apiVersion: consul.hashicorp.com/v1alpha1
kind: ServiceIntentions
metadata: {name: web-intentions}
spec:
  destination: {name: web}
  sources:
  - {name: frontend, action: allow}
  - name: admin
    permissions:
    - action: allow
      http: {pathPrefix: /admin, methods: [GET, POST]}
    - action: deny
      http: {header: [{name: x-debug, present: true}]}
---
apiVersion: consul.hashicorp.com/v1alpha1
kind: ProxyDefaults
metadata: {name: global}
spec:
  config: {local_connect_timeout_ms: 2000}
---
apiVersion: consul.hashicorp.com/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec:
  transparentProxy: {meshDestinationsOnly: true}
""")  # fmt: skip
    for plural, name in (("servicedefaults", "web"), ("serviceintentions", "web-intentions"),
                         ("proxydefaults", "global"), ("meshes", "mesh")):  # fmt: skip
        body = wait_for(lambda p=plural, n=name: synced(kube, p, n), f"{plural}/{name}", logs)
        [condition] = body["status"]["conditions"]
        assert condition["status"] == "True", condition
        assert "finalizers.consul.hashicorp.com" in body["metadata"]["finalizers"]
        assert body["status"]["lastSyncedTime"]
    web = entry(server, "service-defaults", "web")
    assert web is not None and web["Protocol"] == "http"
    assert web["Meta"] == {
        "external-source": "kubernetes",
        "consul.hashicorp.com/source-datacenter": "dc1",
        "consul.hashicorp.com/source-kube-resource": "default/ServiceDefaults/web",
    }
    intentions = entry(server, "service-intentions", "web")
    assert intentions is not None
    sources = {s["Name"]: s for s in intentions["Sources"]}
    assert sources["frontend"]["Action"] == "allow"
    first, second = sources["admin"]["Permissions"]
    assert first["HTTP"]["PathPrefix"] == "/admin" and first["HTTP"]["Methods"] == ["GET", "POST"]
    assert second["Action"] == "deny" and second["HTTP"]["Header"][0]["Name"] == "x-debug"
    proxy = entry(server, "proxy-defaults", "global")
    assert proxy is not None and proxy["Config"] == {"local_connect_timeout_ms": 2000}
    mesh = entry(server, "mesh", "mesh")
    assert mesh is not None and mesh["TransparentProxy"]["MeshDestinationsOnly"] is True

    # An update reaches the entry; a delete takes the entry along, then the resource goes.
    apply(kube, "apiVersion: consul.hashicorp.com/v1alpha1\nkind: ServiceDefaults\n"
                "metadata: {name: web}\nspec: {protocol: grpc}\n")  # fmt: skip
    wait_for(lambda: (entry(server, "service-defaults", "web") or {}).get("Protocol") == "grpc",
             "the updated protocol", logs)  # fmt: skip
    assert kubectl(kube, "delete", "servicedefaults", "web", "--wait=false").returncode == 0
    wait_for(lambda: entry(server, "service-defaults", "web") is None, "entry deleted", logs)
    wait_for(lambda: kube.call("GET", f"{CRS}/servicedefaults/web")[0] == 404,
             "the resource gone once its finalizer is removed", logs)  # fmt: skip


def test_a_refused_resource_is_synced_false_with_the_servers_reason(
    kube: KubeApi, server: ServerProcess, controllers: Controllers
) -> None:
    run = controllers.start("--crds")
    apply(kube, """
apiVersion: consul.hashicorp.com/v1alpha1
kind: ServiceDefaults
metadata: {name: legacy}
spec:
  protocol: http
  upstreamConfig:
    defaults: {connectTimeoutMs: 5000}
""")  # fmt: skip
    body = wait_for(lambda: synced(kube, "servicedefaults", "legacy"), "a condition",
                    lambda: controllers.log(run))  # fmt: skip
    [condition] = body["status"]["conditions"]
    assert condition["status"] == "False" and condition["reason"] == "ConsulAgentError"
    assert "UpstreamConfig" in condition["message"], condition
    assert entry(server, "service-defaults", "legacy") is None
    assert "lastSyncedTime" not in body["status"]
    shown = kubectl(kube, "get", "servicedefaults", "legacy")
    assert shown.stdout.split("\n")[0].split()[:2] == ["NAME", "SYNCED"]
    assert shown.stdout.split("\n")[1].split()[:2] == ["legacy", "False"]


def test_an_entry_the_controller_did_not_make_is_never_overwritten_nor_deleted(
    kube: KubeApi, server: ServerProcess, controllers: Controllers
) -> None:
    by_hand = {"Kind": "service-defaults", "Name": "api", "Protocol": "tcp"}
    assert server.request("PUT", "/v1/config", by_hand)[0] == 200
    run = controllers.start("--crds")
    logs = lambda: controllers.log(run)  # noqa: E731
    apply(kube, "apiVersion: consul.hashicorp.com/v1alpha1\nkind: ServiceDefaults\n"
                "metadata: {name: api}\nspec: {protocol: http}\n")  # fmt: skip
    body = wait_for(lambda: synced(kube, "servicedefaults", "api"), "a condition", logs)
    [condition] = body["status"]["conditions"]
    assert condition["status"] == "False" and condition["reason"] == "ExternalConfigEntry"
    assert "made by something other than a Kubernetes resource" in condition["message"]
    assert (entry(server, "service-defaults", "api") or {}).get("Protocol") == "tcp"
    assert kubectl(kube, "delete", "servicedefaults", "api", "--timeout=30s").returncode == 0
    assert (entry(server, "service-defaults", "api") or {}).get("Protocol") == "tcp"


def lease_spec(kube: KubeApi) -> dict[str, Any]:
    status, body = kube.call(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/loom-controller-leader"
    )
    assert status == 200, body
    spec: dict[str, Any] = body["spec"]
    return spec


def micro_time(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def register_pod(kube: KubeApi, name: str, ip: str) -> None:
    """An injected pod (as the webhook makes it), then Running and Ready at ``ip``."""
    pod = injected_pod(name, ip=ip)
    status_patch = {"status": pod.pop("status")}
    status, out = kube.call("POST", "/api/v1/namespaces/default/pods", pod)
    assert status == 201, out
    status, out = kube.call(
        "PATCH", f"/api/v1/namespaces/default/pods/{name}/status", status_patch,
        content_type="application/merge-patch+json",
    )  # fmt: skip
    assert status == 200, out


def registered(server: ServerProcess, service: str) -> bool:
    status, body, _ = server.request("GET", f"/v1/catalog/service/{service}")
    return status == 200 and bool(body)


def test_two_controllers_elect_one_leader_and_the_standby_takes_over_when_it_is_killed(
    kube: KubeApi, server: ServerProcess, controllers: Controllers
) -> None:
    election = ("--leader-elect", "--leader-elect-lease-duration=4",
                "--leader-elect-renew-deadline=3", "--leader-elect-retry-period=0.5")  # fmt: skip
    first = controllers.start(*election)
    wait_for(lambda: "became leader" in controllers.log(first), "the first leads",
             lambda: controllers.log(first))  # fmt: skip
    holder = lease_spec(kube)["holderIdentity"]
    second = controllers.start(*election)
    both = lambda: controllers.log(first) + controllers.log(second)  # noqa: E731
    register_pod(kube, "alpha", "127.0.0.21")
    wait_for(lambda: registered(server, "alpha"), "alpha registered by the leader", both)
    assert "became leader" not in controllers.log(second)
    assert "registered alpha" not in controllers.log(second)

    controllers.procs[first].send_signal(signal.SIGKILL)
    controllers.procs[first].wait()
    last_renewal = lease_spec(kube)["renewTime"]
    wait_for(lambda: "became leader" in controllers.log(second), "the standby leads", both, 20)
    spec = lease_spec(kube)
    assert spec["holderIdentity"] not in ("", holder) and spec["leaseTransitions"] == 1
    took = (micro_time(spec["acquireTime"]) - micro_time(last_renewal)).total_seconds()
    # Never before the lease ran out (the lease's own timestamps: no split brain); and within
    # a few retry periods after it (a standby that waited for something else, a second lease
    # or a resync, would take 8 s or more). The margin is for a loaded machine: 6.9 s was seen
    # once at load 5.
    assert 4 <= took < 4 + 0.5 + 3.5, f"took over {took:.1f}s after the last renewal"
    print(f"standby took over {took:.1f}s after the dead leader's last renewal (lease 4s)")
    register_pod(kube, "beta", "127.0.0.22")
    wait_for(lambda: registered(server, "beta"), "beta registered by the new leader", both)


def test_a_leader_stopped_cleanly_releases_the_lease(
    kube: KubeApi, server: ServerProcess, controllers: Controllers
) -> None:
    election = ("--leader-elect", "--leader-elect-resource-name=released",
                "--leader-elect-retry-period=0.5")  # fmt: skip
    first = controllers.start(*election)
    wait_for(lambda: "became leader" in controllers.log(first), "a leader",
             lambda: controllers.log(first))  # fmt: skip
    controllers.procs[first].send_signal(signal.SIGTERM)
    controllers.procs[first].wait(10)
    status, body = kube.call(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/released"
    )
    assert status == 200 and not body["spec"].get("holderIdentity"), body
    assert "released lease default/released" in controllers.log(first)


@pytest.fixture(scope="module")
def expiring_kube() -> Iterator[KubeApi]:
    """An API server whose watches expire as on a long-lived busy cluster (see
    /work/shared/REAL-KUBERNETES.md): short watch timeouts, no watch cache, frequent
    compaction; a writer thread keeps the resource version moving."""
    import threading

    args = ("--min-request-timeout=8", "--etcd-compaction-interval=10s", "--watch-cache=false")
    with start_kube(*args) as api:
        api.service_account("default")
        stop = threading.Event()

        def churn() -> None:
            path = "/api/v1/namespaces/default/configmaps"
            api.call("POST", path, {"metadata": {"name": "churn"}, "data": {"n": "0"}})
            n = 0
            while not stop.wait(0.2):  # a pacing interval: one unrelated write per 0.2 s
                n += 1
                api.call("PATCH", f"{path}/churn", {"data": {"n": str(n)}},
                         content_type="application/merge-patch+json")  # fmt: skip

        writer = threading.Thread(target=churn, daemon=True)
        writer.start()
        try:
            yield api
        finally:
            stop.set()
            writer.join(5)


def passing(server: ServerProcess, service: str) -> bool:
    status, body, _ = server.request("GET", f"/v1/health/service/{service}?passing=1")
    return status == 200 and bool(body)


def test_readiness_flips_reach_the_catalog_at_once_while_watches_expire(
    expiring_kube: KubeApi, server: ServerProcess, tmp_path: Path
) -> None:
    running = Controllers(expiring_kube, server, tmp_path)
    try:
        run = running.start()
        logs = lambda: running.log(run)  # noqa: E731
        register_pod(expiring_kube, "gamma", "127.0.0.23")
        wait_for(lambda: passing(server, "gamma"), "gamma passing", logs)
        worst = 0.0
        deadline = time.monotonic() + 30  # several watch lifetimes and compactions
        ready = True
        while time.monotonic() < deadline:
            ready = not ready
            flip = {"status": {"conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}  # fmt: skip
            status, out = expiring_kube.call(
                "PATCH", "/api/v1/namespaces/default/pods/gamma/status", flip,
                content_type="application/merge-patch+json",
            )  # fmt: skip
            assert status == 200, out
            began = time.monotonic()
            wait_for(lambda r=ready: passing(server, "gamma") == r, "the flip", logs, 10)
            worst = max(worst, time.monotonic() - began)
        assert worst < 3.0, f"a readiness flip took {worst:.1f}s\n{logs()[-3000:]}"
        assert "expired" in logs(), "no watch expired: the test did not test expiry"
        print(f"worst readiness propagation {worst:.2f}s; controller log mentions "
              f"{logs().count('expired')} expired watch(es)")  # fmt: skip
    finally:
        running.stop()
