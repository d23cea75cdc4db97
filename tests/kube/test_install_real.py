"""``loom install`` and the webhook against a real kube-apiserver (``KUBEBUILDER_ASSETS``).

Every manifest ``loom install`` renders (the CRDs, the Loom server's StatefulSet and Services,
the injector, the controller, RBAC, ACL set-up, the webhook configuration) is sent through
the API server's server-side dry run (kubectl ``apply --server-side --dry-run=server``:
schema, defaulting, validation, admission),
and the rendered MutatingWebhookConfiguration, pointed by ``--webhook-url`` at a real
``loom k8s webhook`` on loopback with a ``--generate-certs`` certificate (IP SAN), gates real
pod CREATEs: injection (the pod's own init containers get the upstream env vars), and the
refusal in a PodSecurity ``baseline`` namespace, shown by the API server with Loom's reason.
"""

from __future__ import annotations

import base64
import datetime
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from loom.k8s.certs import generate_server_tls, generate_tls
from loom.k8s.install import AclTokens, InstallSettings, render, with_install_defaults
from loom.k8s.install_server import ServerSettings
from loom.k8s.manifests import dump_documents
from loom.k8s.values import parse_values, settings_from
from tests.support.kubeapi import KubeApi, free_port, requires_kube, start_kube

pytestmark = requires_kube
TOKENS = AclTokens("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002")


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApi]:
    with start_kube() as api:
        yield api


def kubectl(kube: KubeApi, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kube.kubeconfig()}", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def rendered(
    values_text: str = "", hosts: tuple[str, ...] = (), certs: bool = True
) -> list[dict[str, Any]]:
    values = parse_values(values_text)
    install = InstallSettings.from_values(values)
    now = datetime.datetime.now(datetime.UTC)
    tls = generate_tls(install.webhook_name, install.namespace, now, hosts) if certs else None
    inject = settings_from(with_install_defaults(values))
    server_tls = None
    if inject.server_ca.enabled and ServerSettings.from_values(values).enabled:
        server_tls = generate_server_tls(install.name, install.namespace, install.datacenter, now)
    return render(values, inject, install, tls, TOKENS, server_tls)


@pytest.mark.parametrize(
    ("values", "certs"),
    [("", True), ("global:\n  acls:\n    manageSystemACLs: false\nconnectInject:\n  replicas: 2\n", True),
     ("", False), ("server:\n  etcdEndpoints: ['127.0.0.1:2379']\n", False),
     ("global:\n  tls:\n    enabled: false\n", True)],
    ids=["generated-certs", "no-acls", "webhook-managed-certs", "etcd-ha", "tls-false"],
)  # fmt: skip
def test_every_install_manifest_passes_the_real_api_servers_server_side_dry_run(
    kube: KubeApi, values: str, certs: bool
) -> None:
    docs = rendered(values, certs=certs)
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    rest = [d for d in docs if d["kind"] != "Namespace"]
    # A dry-run Namespace is not created, so the namespaced objects need a real one.
    done = kubectl(kube, "apply", "--server-side", "-f", "-", stdin=dump_documents(namespaces))
    assert done.returncode == 0, done.stderr
    dry = kubectl(
        kube, "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=dump_documents(rest)
    )
    assert dry.returncode == 0, dry.stderr
    lines = [line for line in dry.stdout.splitlines() if line]
    assert len(lines) == len(rest) and all(line.endswith("(server dry run)") for line in lines)


class Webhook:
    """A real ``loom k8s webhook`` on 127.0.0.1 with the install's certificate."""

    def __init__(self, tmp: Path, docs: list[dict[str, Any]], port: int) -> None:
        [secret] = [d for d in docs if d["kind"] == "Secret"
                    and d["metadata"]["name"] == "loom-connect-injector-tls"]  # fmt: skip
        [values] = [d for d in docs if d["kind"] == "ConfigMap"]
        for name in ("tls.crt", "tls.key"):
            (tmp / name).write_bytes(base64.b64decode(secret["data"][name]))
        (tmp / "values.yaml").write_text(values["data"]["values.yaml"])
        self.log = (tmp / "webhook.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loom", "k8s", "webhook", f"--tls-cert={tmp / 'tls.crt'}",
             f"--tls-key={tmp / 'tls.key'}", f"--listen=127.0.0.1:{port}",
             f"--values={tmp / 'values.yaml'}"],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on https://" in line, line + (tmp / "webhook.log").read_text()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.log.close()


@pytest.fixture(scope="module")
def webhook(kube: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    port = free_port()
    docs = rendered(f"connectInject:\n  webhookUrl: https://127.0.0.1:{port}\n", ("127.0.0.1",))
    process = Webhook(tmp_path_factory.mktemp("webhook"), docs, port)
    try:
        [config] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
        done = kubectl(kube, "apply", "--server-side", "-f", "-", stdin=dump_documents([config]))
        assert done.returncode == 0, done.stderr
        yield process
    finally:
        kubectl(kube, "delete", "mutatingwebhookconfiguration", config["metadata"]["name"])
        process.stop()


def namespace(kube: KubeApi, name: str, labels: dict[str, str]) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    status, body = kube.call("POST", "/api/v1/namespaces", doc)
    assert status == 201, body
    kube.service_account("default", name)  # no kube-controller-manager makes it here


def pod(name: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {"consul.hashicorp.com/connect-inject": "true", **annotations},
        },
        "spec": {
            "initContainers": [{"name": "migrate", "image": "busybox", "command": ["true"]}],
            "containers": [{"name": name, "image": "busybox", "ports": [{"containerPort": 8080}]}],
        },
    }


def create_pod(kube: KubeApi, ns: str, body: dict[str, Any]) -> tuple[int, Any]:
    # The webhook may be reached a moment after its configuration is stored: the API
    # server's webhook informer picks it up asynchronously, so wait until it answers.
    deadline = time.monotonic() + 30
    while True:
        status, out = kube.call("POST", f"/api/v1/namespaces/{ns}/pods", body)
        injected = status == 201 and "connect-inject-status" in str(out["metadata"])
        if injected or status != 201 or time.monotonic() > deadline:
            return status, out
        kube.call("DELETE", f"/api/v1/namespaces/{ns}/pods/{body['metadata']['name']}")
        time.sleep(0.2)  # a polling interval: the loop ends once the webhook injected


def test_the_real_api_server_reaches_the_webhook_by_url_and_the_pods_init_containers_get_env(
    kube: KubeApi, webhook: Webhook
) -> None:
    namespace(kube, "shop", {})
    upstreams = {"connect-service-upstreams": "static-server:1234"}
    annotations = {f"consul.hashicorp.com/{k}": v for k, v in upstreams.items()}
    status, out = create_pod(kube, "shop", pod("client", **annotations))
    assert status == 201, out
    assert out["metadata"]["labels"]["consul.hashicorp.com/connect-inject-status"] == "injected"
    migrate, connect_init = out["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in migrate["env"]}
    assert env == {
        "STATIC_SERVER_CONNECT_SERVICE_HOST": "127.0.0.1",
        "STATIC_SERVER_CONNECT_SERVICE_PORT": "1234",
    }
    assert connect_init["name"] == "loom-connect-init"


def test_a_pod_security_baseline_namespace_gets_loom_s_refusal_and_the_way_out_is_admitted(
    kube: KubeApi, webhook: Webhook
) -> None:
    namespace(kube, "strict", {"pod-security.kubernetes.io/enforce": "baseline"})
    status, out = create_pod(kube, "strict", pod("server"))
    assert status == 400, out
    message = out["message"]
    assert 'admission webhook "loom-connect-injector-baseline.loom.mesh" denied' in message
    assert "PodSecurity 'baseline' forbids the NET_ADMIN capability" in message, message
    assert 'consul.hashicorp.com/transparent-proxy: "false"' in message
    off = pod("server", **{"consul.hashicorp.com/transparent-proxy": "false"})
    status, out = create_pod(kube, "strict", off)
    assert status == 201, out
    assert out["metadata"]["labels"]["consul.hashicorp.com/connect-inject-status"] == "injected"


def test_without_loom_s_refusal_the_api_server_itself_refuses_net_admin_in_baseline(
    kube: KubeApi, webhook: Webhook
) -> None:
    """What the webhook's refusal spares the user: PodSecurity's own, about connect-init."""
    namespace(kube, "strict-bare", {"pod-security.kubernetes.io/enforce": "baseline"})
    bare = yaml.safe_load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: raw}\nspec:\n  containers:\n"
        "  - name: raw\n    image: busybox\n    securityContext:\n"
        "      capabilities: {add: [NET_ADMIN]}\n"
    )
    status, out = kube.call("POST", "/api/v1/namespaces/strict-bare/pods", bare)
    assert status == 403 and 'violates PodSecurity "baseline' in out["message"], out
