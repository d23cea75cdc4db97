"""Webhook certificates managed by Loom, against a real kube-apiserver (``KUBEBUILDER_ASSETS``).

``loom k8s webhook --webhook-config`` starts with no certificate: it makes one, puts its CA in
the real MutatingWebhookConfiguration's ``caBundle`` (rendered by ``loom install`` without
one), serves with it, and rotates it (short lifetimes here) while pods are created through
the API server without pause: every admission in the meantime must succeed (the webhook's
``failurePolicy`` is ``Fail``, so a TLS failure would refuse the pod).
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from loom.k8s.install import InstallSettings, render
from loom.k8s.manifests import dump_documents
from loom.k8s.values import parse_values, settings_from
from tests.support.kubeapi import KubeApi, free_port, requires_kube, start_kube

pytestmark = requires_kube


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeApi]:
    with start_kube() as api:
        api.service_account("default")
        yield api


def bundle(kube: KubeApi) -> list[x509.Certificate]:
    status, body = kube.call(
        "GET",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/loom-connect-injector",
    )
    assert status == 200, body
    bundles = {h["clientConfig"].get("caBundle", "") for h in body["webhooks"]}
    assert len(bundles) == 1, "every webhook of the configuration gets the same bundle"
    [text] = bundles
    return x509.load_pem_x509_certificates(base64.b64decode(text)) if text else []


def test_the_webhook_makes_installs_and_rotates_its_certificate_without_a_failed_admission(
    kube: KubeApi, tmp_path: Path
) -> None:
    port = free_port()
    values = parse_values(
        f"connectInject:\n  webhookUrl: https://127.0.0.1:{port}\n"
        "global:\n  acls:\n    manageSystemACLs: false\n"
    )
    docs = render(values, settings_from(values), InstallSettings.from_values(values))
    [config] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    applied = subprocess.run(
        ["kubectl", f"--kubeconfig={kube.kubeconfig()}", "apply", "-f", "-"],
        input=dump_documents([config]), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    log_path = tmp_path / "webhook.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loom", "k8s", "webhook", f"--listen=127.0.0.1:{port}",
             "--webhook-config=loom-connect-injector", f"--cert-dir={tmp_path / 'tls'}",
             "--service-namespace=loom", "--cert-host=127.0.0.1", f"--kubeconfig={kube.kubeconfig()}",
             "--cert-validity=30", "--cert-renew-before=24", "--cert-check-interval=0.5",
             "--reload-interval=0.2"],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on https://" in line, line + log_path.read_text()
        first = bundle(kube)
        assert len(first) == 1  # the CA of the certificate it made at start
        served = x509.load_pem_x509_certificate((tmp_path / "tls" / "tls.crt").read_bytes())
        assert served.issuer == first[0].subject
        created, deadline = 0, time.monotonic() + 20
        while time.monotonic() < deadline:  # ~3 rotations (every ~6 s)
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"p{created}",
                                "annotations": {"consul.hashicorp.com/connect-inject": "true"}},
                   "spec": {"containers": [{"name": "app", "image": "busybox"}]}}  # fmt: skip
            status, out = kube.call("POST", "/api/v1/namespaces/default/pods", pod)
            assert status == 201, f"pod {created}: {out}\n{log_path.read_text()[-2000:]}"
            labels = out["metadata"].get("labels") or {}
            assert labels.get("consul.hashicorp.com/connect-inject-status") == "injected"
            created += 1
        rotations = log_path.read_text().count("installed a new webhook certificate")
        assert rotations >= 3, log_path.read_text()
        assert log_path.read_text().count("reloaded TLS certificate") >= rotations - 1
        now = bundle(kube)
        assert 1 < len(now) <= 8 and now[0] != first[0]
        print(f"{created} admissions, {rotations} certificates, no failure")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
