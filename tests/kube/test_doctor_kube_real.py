"""``loom doctor --kubeconfig`` against a real kube-apiserver (``KUBEBUILDER_ASSETS``).

A healthy install: ``loom install``'s MutatingWebhookConfiguration (pointing at a webhook URL
on loopback), a real ``loom k8s webhook`` that makes its own certificate and installs its CA,
a real ``loom k8s controller --leader-elect`` holding its Lease, a real ``loom server``, and an
injected pod: every Kubernetes check passes. Then broken on purpose, one way at a time: a
caBundle holding another CA, no webhook configuration, an opted-in pod created while there
was none, a stopped controller; each fails its check with the fix named, and the exit status
is 1. And a ``--generate-certs`` install whose Service is out of reach from the test: its TLS Secret's
certificate is checked against the bundle instead (passing, then failing once replaced).
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

from loom.k8s.certs import generate_tls
from loom.k8s.install import InstallSettings, TlsMaterial, render
from loom.k8s.manifests import dump_documents
from loom.k8s.values import parse_values, settings_from
from tests.support.kubeapi import KubeApi, free_port, requires_kube, start_kube
from tests.support.server import ServerProcess, start_server

pytestmark = requires_kube
HOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/loom/leases/loom-controller-leader"
KUBE_CHECKS = ("kubernetes API", "webhook configuration", "webhook caBundle", "webhook answers",
               "controller", "injected pods")  # fmt: skip


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _wait(check: Any, what: str, log: Path) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)  # a polling interval: the loop ends when the check passes
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


class Install:
    """The cluster, the server, and Loom's webhook and controller running against them."""

    def __init__(self, kube: KubeApi, server: ServerProcess, tmp: Path) -> None:
        self.kube, self.server, self.tmp = kube, server, tmp
        self.config: dict[str, Any] = {}
        self.controller: subprocess.Popen[Any] | None = None

    def start_controller(self) -> None:
        """``loom k8s controller --leader-elect``, returning once it holds its Lease."""
        log_path = self.tmp / "controller.log"
        with log_path.open("ab") as log:
            self.controller = subprocess.Popen(
                [sys.executable, "-m", "loom", "k8s", "controller",
                 f"--kubeconfig={self.kube.kubeconfig()}", f"--http-addr={self.server.http}",
                 "--leader-elect", "--leader-elect-resource-name=loom-controller-leader",
                 "--leader-elect-resource-namespace=loom"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait(lambda: ((self.kube.call("GET", LEASE)[1] or {}).get("spec") or {}).get(
            "holderIdentity"), "the controller to hold its Lease", log_path)  # fmt: skip

    def stop_controller(self) -> None:
        if self.controller is not None:
            _stop(self.controller)
            self.controller = None

    def doctor(self, *extra: str) -> tuple[int, dict[str, str]]:
        """(exit status, {check name: its whole line}) of ``loom doctor --kubeconfig``."""
        done = subprocess.run(
            [sys.executable, "-m", "loom", "doctor", f"--kubeconfig={self.kube.kubeconfig()}",
             "-http-addr", self.server.http, "-grpc-addr", self.server.grpc, *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        lines = {line[2:].split(":")[0]: line for line in done.stdout.splitlines()[:-1]}
        assert set(KUBE_CHECKS) <= set(lines), done.stdout + done.stderr
        return done.returncode, lines

    def hooks(self) -> dict[str, Any]:
        status, body = self.kube.call("GET", f"{HOOKS}/loom-connect-injector")
        assert status == 200, body
        return dict(body)

    def restore(self) -> None:
        """The webhook configuration as the webhook left it (created again if deleted)."""
        status, body = self.kube.call("GET", f"{HOOKS}/loom-connect-injector")
        meta = self.config["metadata"]
        doc = {"apiVersion": self.config["apiVersion"], "kind": self.config["kind"],
               "metadata": {"name": meta["name"], "labels": meta.get("labels") or {}},
               "webhooks": self.config["webhooks"]}  # fmt: skip
        if status == 200:
            doc["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
            status, out = self.kube.call("PUT", f"{HOOKS}/loom-connect-injector", doc)
            assert status == 200, out
        else:
            status, out = self.kube.call("POST", HOOKS, doc)
            assert status == 201, out


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    tmp = tmp_path_factory.mktemp("doctor")
    port = free_port()
    values = parse_values(
        f"connectInject:\n  webhookUrl: https://127.0.0.1:{port}\n"
        "global:\n  acls:\n    manageSystemACLs: false\n"
    )
    docs = render(values, settings_from(values), InstallSettings.from_values(values))
    [config] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    [namespace] = [d for d in docs if d["kind"] == "Namespace"]
    procs: list[subprocess.Popen[Any]] = []
    server = start_server()
    running: Install | None = None
    try:
        with start_kube() as kube:
            running = Install(kube, server, tmp)
            kube.service_account("default")
            kubeconfig = kube.kubeconfig()
            applied = subprocess.run(
                ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", "-"],
                input=dump_documents([namespace, config]), capture_output=True, text=True,
                check=False,
            )  # fmt: skip
            assert applied.returncode == 0, applied.stderr
            webhook_log = tmp / "webhook.log"
            with webhook_log.open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "loom", "k8s", "webhook", f"--listen=127.0.0.1:{port}",
                     "--webhook-config=loom-connect-injector", f"--cert-dir={tmp / 'tls'}",
                     "--service-namespace=loom", "--cert-host=127.0.0.1",
                     f"--kubeconfig={kubeconfig}"],
                    stdout=subprocess.PIPE, stderr=log, text=True,
                ))  # fmt: skip
            stdout = procs[0].stdout
            assert stdout is not None
            line = stdout.readline()
            assert "listening on https://" in line, line + webhook_log.read_text()
            running.start_controller()
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "early", "annotations": {
                       "consul.hashicorp.com/connect-inject": "true"}},
                   "spec": {"containers": [{"name": "app", "image": "busybox"}]}}  # fmt: skip
            status, out = kube.call("POST", "/api/v1/namespaces/default/pods", pod)
            assert status == 201, out
            status, live = kube.call("GET", f"{HOOKS}/loom-connect-injector")
            assert status == 200, live
            running.config = live
            yield running
    finally:
        if running is not None:
            running.stop_controller()
        for proc in procs:
            _stop(proc)
        server.stop()


def test_a_healthy_install_passes_every_kubernetes_check(install: Install) -> None:
    _, lines = install.doctor()
    print("\n".join(lines[name] for name in KUBE_CHECKS))
    for name in KUBE_CHECKS:
        assert lines[name].startswith("✔ "), lines[name]
    assert "verifies the webhook's certificate served at 127.0.0.1:" in lines["webhook caBundle"]
    assert "comes back injected" in lines["webhook answers"]
    assert "held by" in lines["controller"]
    assert "1 opted-in pods" in lines["injected pods"]


def test_a_caBundle_of_another_ca_fails_with_the_fix_and_exit_1(install: Install) -> None:
    other = generate_tls("elsewhere", "loom", datetime.datetime.now(datetime.UTC))
    doc = install.hooks()
    for hook in doc["webhooks"]:
        hook["clientConfig"]["caBundle"] = base64.b64encode(other.ca_pem).decode()
    status, out = install.kube.call("PUT", f"{HOOKS}/loom-connect-injector", doc)
    assert status == 200, out
    try:
        code, lines = install.doctor()
    finally:
        install.restore()
    assert code == 1
    line = lines["webhook caBundle"]
    assert line.startswith("✘ webhook caBundle: the webhook's certificate is not signed by the "
                           "caBundle served at 127.0.0.1:"), line  # fmt: skip
    assert line.endswith(" — fix: restart the webhook so it installs its CA again "
                         "(--webhook-config), or put the CA of its certificate in caBundle "
                         "(`loom install --generate-certs`)"), line  # fmt: skip
    assert lines["webhook answers"].startswith("✘ webhook answers: a dry-run pod in default "
                                               "was refused"), lines["webhook answers"]  # fmt: skip
    assert install.doctor()[1]["webhook caBundle"].startswith("✔ ")


def test_a_missing_webhook_configuration_fails_with_the_fix_and_later_pods_are_named(
    install: Install,
) -> None:
    status, out = install.kube.call("DELETE", f"{HOOKS}/loom-connect-injector")
    assert status == 200, out
    late = "/api/v1/namespaces/default/pods/late"
    try:
        code, lines = install.doctor()
        assert code == 1
        assert lines["webhook configuration"] == (
            "✘ webhook configuration: no MutatingWebhookConfiguration loom-connect-injector: "
            "pods are not injected — fix: `loom install | kubectl apply -f -`")  # fmt: skip
        assert lines["webhook caBundle"] == "- webhook caBundle: no webhook configuration"
        assert lines["webhook answers"] == "- webhook answers: no webhook configuration"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "late", "annotations": {
                   "consul.hashicorp.com/connect-inject": "true"}},
               "spec": {"containers": [{"name": "app", "image": "busybox"}]}}  # fmt: skip
        status, out = install.kube.call("POST", "/api/v1/namespaces/default/pods", pod)
        assert status == 201, out
    finally:
        install.restore()
    try:
        code, lines = install.doctor()
        assert code == 1
        assert lines["webhook configuration"].startswith("✔ ")
        assert lines["injected pods"] == (
            "✘ injected pods: 1 of 2 opted-in pods not injected: default/late — fix: recreate "
            "them once the webhook answers (kubectl rollout restart of their workloads)")  # fmt: skip
    finally:
        status, out = install.kube.call("DELETE", late)
        assert status == 200, out


def test_out_of_reach_of_the_service_the_tls_secret_is_checked_against_the_caBundle(
    install: Install,
) -> None:
    values = parse_values("global:\n  name: other\n  namespace: other\n"
                          "  acls:\n    manageSystemACLs: false\n")  # fmt: skip
    settings = InstallSettings.from_values(values)
    tls = generate_tls(
        settings.webhook_name, settings.namespace, datetime.datetime.now(datetime.UTC)
    )
    docs = render(values, settings_from(values), settings,
                  TlsMaterial(tls.cert_pem, tls.key_pem, tls.ca_pem))  # fmt: skip
    wanted = ("Namespace", "Secret", "MutatingWebhookConfiguration")
    applied = subprocess.run(
        ["kubectl", f"--kubeconfig={install.kube.kubeconfig()}", "apply", "-f", "-"],
        input=dump_documents([d for d in docs if d["kind"] in wanted]),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    secret = "/api/v1/namespaces/other/secrets/other-connect-injector-tls"
    try:
        code, lines = install.doctor("--k8s-name=other", "--k8s-namespace=other")
        assert lines["webhook caBundle"].startswith(
            "✔ webhook caBundle: verifies the webhook's certificate in Secret "
            "other/other-connect-injector-tls, which expires "
        ), lines["webhook caBundle"]
        stranger = generate_tls(
            "other-connect-injector", "other", datetime.datetime.now(datetime.UTC)
        )
        status, body = install.kube.call("GET", secret)
        assert status == 200, body
        body["data"]["tls.crt"] = base64.b64encode(stranger.cert_pem).decode()
        status, out = install.kube.call("PUT", secret, body)
        assert status == 200, out
        code, lines = install.doctor("--k8s-name=other", "--k8s-namespace=other")
        assert code == 1
        assert lines["webhook caBundle"].startswith(
            "✘ webhook caBundle: the webhook's certificate is not signed by the caBundle in "
            "Secret other/other-connect-injector-tls — fix: restart the webhook"
        ), lines["webhook caBundle"]
    finally:
        status, out = install.kube.call("DELETE", f"{HOOKS}/other-connect-injector")
        assert status == 200, out


def test_a_stopped_controller_fails_its_check_with_the_fix(install: Install) -> None:
    # Last in the module: the controller stays stopped (one started here would outlive the test)
    install.stop_controller()  # SIGTERM: it releases its Lease (an empty holder)
    code, lines = install.doctor()
    assert code == 1
    assert lines["controller"] == (
        "✘ controller: deployment loom/loom-endpoints-controller: 404 deployments.apps "
        '"loom-endpoints-controller" not found; lease loom/loom-controller-leader has no holder '
        "— fix: kubectl -n loom describe deploy loom-endpoints-controller, and its logs"
    )  # fmt: skip
