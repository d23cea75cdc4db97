"""The admission webhook over real HTTPS, on the same golden pairs as `loom inject`.

No Kubernetes API server can run here, so these tests stand in for it: they send the
AdmissionReviews kube-apiserver would send (the pod, or a Deployment's pod template wrapped in
a Pod) over TLS with a certificate made by the test, apply the returned JSONPatch to the
original with an independent RFC 6902 applier, and compare the result with the golden
`.injected.yaml` that `loom inject` must print too.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loom.k8s.manifests import dump_documents, load_documents, map_pod_templates
from loom.k8s.values import settings_from
from loom.k8s.webhook import (
    NamespaceLabelCache,
    build_app,
    server_tls_context,
)
from tests.unit.inject.golden_cases import CASE_DIR, case_names, load_case
from tests.unit.inject.jsonpatch_apply import apply_patch


def make_ca_and_cert(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test CA {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loom-webhook")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / f"{name}-ca.pem"
    cert_path = directory / f"{name}-cert.pem"
    key_path = directory / f"{name}-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, Path, Path]:
    return make_ca_and_cert(tmp_path_factory.mktemp("certs"), "first")


def client_context(*cas: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in cas:
        context.load_verify_locations(str(ca))
    return context


def admission_review(pod: dict[str, Any], namespace: str, **extra: Any) -> dict[str, Any]:
    """What kube-apiserver sends for a pod CREATE."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": pod,
            **extra,
        },
    }


async def start_in_process(settings, labels, certs) -> tuple[web.AppRunner, str]:
    _, cert, key = certs
    runner = web.AppRunner(build_app(settings, labels), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls_context(cert, key))
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"https://{host}:{port}"


def as_pod(template: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    if template is owner:  # already a Pod
        return template
    return {"apiVersion": "v1", "kind": "Pod", **template}


@pytest.mark.parametrize("case_name", case_names())
async def test_the_webhook_patch_applied_to_each_pod_gives_the_golden_result(
    case_name, certs
) -> None:
    case = load_case(case_name)
    settings = settings_from(case.values)
    docs = [d for d in load_documents(case.text) if d is not None]
    # The namespace labels reach the webhook through its labels cache (file-fed in production).
    labels = NamespaceLabelCache()
    runner, url = await start_in_process(settings, labels, certs)
    answers: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def collect(pod: Any, owner: Any, where: str) -> dict[str, Any]:
        namespace = (owner.get("metadata") or {}).get("namespace") or "default"
        labels.labels[namespace] = dict(case.namespace_labels)
        answers.append((where, as_pod(pod, owner), {"namespace": namespace}))
        return dict(pod)

    map_pod_templates(docs, collect)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(certs[0]))
        ) as session:
            results = []
            for where, pod, info in answers:
                review = admission_review(pod, info["namespace"])
                async with session.post(f"{url}/mutate", json=review) as resp:
                    assert resp.status == 200
                    body = await resp.json()
                response = body["response"]
                assert body["kind"] == "AdmissionReview"
                assert response["uid"] == review["request"]["uid"]
                results.append((where, pod, response))
    finally:
        await runner.cleanup()

    refused = [(where, r) for where, _, r in results if not r["allowed"]]
    refused_golden = CASE_DIR / f"{case_name}.refused.txt"
    if refused_golden.exists():
        where, response = refused[0]
        assert "patch" not in response
        line = f"loom: {where}: {response['status']['message']}\n"
        assert line == refused_golden.read_text()
        return
    assert not refused, refused
    patched = iter(results)

    def unwrap(pod: Any, owner: Any, where: str) -> dict[str, Any]:
        got_where, sent, response = next(patched)
        assert got_where == where
        if "patch" not in response:
            return dict(pod)
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"]))
        result = apply_patch(sent, ops)
        if pod is owner:
            return result
        return {k: v for k, v in result.items() if k not in ("apiVersion", "kind")}

    out = dump_documents(map_pod_templates(docs, unwrap))
    assert out == (CASE_DIR / f"{case_name}.injected.yaml").read_text()


async def test_labels_in_the_review_namespace_object_win_over_the_cache(certs) -> None:
    case = load_case("seed-static-server-pod")
    pod = next(d for d in load_documents(case.text) if d["kind"] == "Pod")
    labels = NamespaceLabelCache()
    labels.labels["default"] = {"consul.hashicorp.com/transparent-proxy": "true"}
    runner, url = await start_in_process(settings_from({}), labels, certs)
    namespace_object = {
        "metadata": {
            "name": "default",
            "labels": {"consul.hashicorp.com/transparent-proxy": "false"},
        }
    }
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(certs[0]))
        ) as session:
            review = admission_review(pod, "default", namespaceObject=namespace_object)
            async with session.post(f"{url}/mutate", json=review) as resp:
                response = (await resp.json())["response"]
    finally:
        await runner.cleanup()
    patched = apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    annotations = patched["metadata"]["annotations"]
    assert "consul.hashicorp.com/transparent-proxy-status" not in annotations


# --- the real `loom k8s webhook` process -----------------------------------------------


class WebhookProcess:
    def __init__(self, tmp_path: Path, certs: tuple[Path, Path, Path]) -> None:
        self.tmp = tmp_path
        self.ca, cert, key = certs
        self.cert = tmp_path / "tls.crt"
        self.key = tmp_path / "tls.key"
        self.cert.write_bytes(cert.read_bytes())
        self.key.write_bytes(key.read_bytes())
        self.labels = tmp_path / "labels.yaml"
        self.labels.write_text("{}\n")
        self.log = tmp_path / "webhook.log"  # a file: an undrained pipe could block it
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loom",
                "k8s",
                "webhook",
                "--tls-cert",
                str(self.cert),
                "--tls-key",
                str(self.key),
                "--listen",
                "127.0.0.1:0",
                "--namespace-labels-file",
                str(self.labels),
                "--reload-interval",
                "0.05",
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on https://" in line, line + self.log.read_text()
        self.url = line.strip().split("listening on ")[1]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self._log.close()
        return self.proc.returncode

    async def logged(self, text: str, timeout: float = 10) -> None:
        """Wait until the webhook's log has a line containing ``text``."""
        async with asyncio.timeout(timeout):
            while text not in self.log.read_text():
                await asyncio.sleep(0.02)


@pytest.fixture
def webhook(tmp_path, certs):
    process = WebhookProcess(tmp_path, certs)
    try:
        yield process
    finally:
        process.stop()


def replace_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def peer_certificate(url: str, context: ssl.SSLContext) -> bytes:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    _reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_the_webhook_process_serves_health_metrics_and_rejects_malformed_reviews(
    webhook,
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"consul.hashicorp.com/connect-inject": "yes"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_context(webhook.ca))
    ) as session:
        async with session.get(f"{webhook.url}/healthz") as resp:
            assert resp.status == 200 and await resp.text() == "ok\n"
        for bad in (b"not json", b"[]", json.dumps({"kind": "AdmissionReview"}).encode()):
            async with session.post(f"{webhook.url}/mutate", data=bad) as resp:
                assert resp.status == 400  # not a review: nothing the API server could match
                refused = (await resp.json())["response"]
                assert refused["allowed"] is False and refused["status"]["code"] == 400
        async with session.post(
            f"{webhook.url}/mutate", json=admission_review(pod, "default")
        ) as resp:
            response = (await resp.json())["response"]
        assert response["allowed"] is False
        assert response["status"]["message"] == (
            'consul.hashicorp.com/connect-inject=\'yes\': not a boolean: use "true" or "false"'
        )
        pod["metadata"]["annotations"]["consul.hashicorp.com/connect-inject"] = "true"
        async with session.post(
            f"{webhook.url}/mutate", json=admission_review(pod, "default")
        ) as resp:
            assert (await resp.json())["response"]["patchType"] == "JSONPatch"
        pod["metadata"]["annotations"] = {}
        async with session.post(
            f"{webhook.url}/mutate", json=admission_review(pod, "default")
        ) as resp:
            response = (await resp.json())["response"]
        assert response == {"uid": response["uid"], "allowed": True}
        async with session.get(f"{webhook.url}/metrics") as resp:
            metrics = await resp.text()
    assert "loom_webhook_reviews_total 6\n" in metrics
    assert "loom_webhook_injected_total 1\n" in metrics
    assert "loom_webhook_refused_total 1\n" in metrics
    assert "loom_webhook_errors_total 3\n" in metrics
    assert 'loom_webhook_review_duration_seconds_bucket{le="+Inf"} 6\n' in metrics
    assert webhook.stop() == 0


async def test_a_rotated_certificate_is_served_without_a_restart(webhook) -> None:
    second_ca, second_cert, second_key = make_ca_and_cert(webhook.tmp, "second")
    trust_both = client_context(webhook.ca, second_ca)
    before = await peer_certificate(webhook.url, trust_both)
    assert before == ssl.PEM_cert_to_DER_cert(webhook.cert.read_text())
    # A broken pair (cert without its key) is ignored: the old certificate stays.
    replace_atomically(webhook.cert, second_cert.read_bytes())
    await webhook.logged("keeping the previous certificate")  # it saw the pair and refused it
    assert await peer_certificate(webhook.url, trust_both) == before
    replace_atomically(webhook.key, second_key.read_bytes())
    expected = ssl.PEM_cert_to_DER_cert(second_cert.read_text())
    deadline = time.monotonic() + 5
    while (got := await peer_certificate(webhook.url, trust_both)) != expected:
        assert time.monotonic() < deadline, "the new certificate was never served"
        await asyncio.sleep(0.05)
    assert got == expected
    # A client trusting only the new CA now connects; only the old one cannot.
    await peer_certificate(webhook.url, client_context(second_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        await peer_certificate(webhook.url, client_context(webhook.ca))


async def test_the_namespace_labels_file_is_reloaded_when_it_changes(webhook) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"consul.hashicorp.com/connect-inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }

    async def tproxy_status(session: aiohttp.ClientSession) -> bool:
        async with session.post(
            f"{webhook.url}/mutate", json=admission_review(pod, "team-a")
        ) as resp:
            response = (await resp.json())["response"]
        patched = apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        return "consul.hashicorp.com/transparent-proxy-status" in patched["metadata"]["annotations"]

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_context(webhook.ca))
    ) as session:
        assert await tproxy_status(session)
        replace_atomically(
            webhook.labels,
            yaml.safe_dump(
                {"team-a": {"consul.hashicorp.com/transparent-proxy": "false"}}
            ).encode(),
        )
        deadline = time.monotonic() + 5
        while await tproxy_status(session):
            assert time.monotonic() < deadline, "the labels file was never reloaded"
            await asyncio.sleep(0.05)


def test_bad_certificate_files_are_one_line_errors(tmp_path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loom",
            "k8s",
            "webhook",
            "--tls-cert",
            str(tmp_path / "c.pem"),
            "--tls-key",
            str(tmp_path / "c.pem"),
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("loom: cannot load TLS certificate")
    assert proc.stderr.count("\n") == 1
