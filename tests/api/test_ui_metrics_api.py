"""``GET /v1/loom/ui/metrics`` against a real server and a real Prometheus (no sidecars).

The endpoint with ACLs on (default deny): the management token gets the provider's (empty)
answer, a garbage token is refused before Prometheus is asked; a server without a provider
answers ``Provider: ""``; a provider that does not answer is a 502 naming it; the flags are
given together and the URL is http(s). The numbers themselves, from real sidecars, are in
``tests/e2e/test_local_prometheus.py``. Skipped with the reason without a prometheus binary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mesh import free_port, wait_for
from tests.support.server import ServerProcess, acl_server, start_server

ROOT = str(uuid.uuid4())
PATH = "/v1/loom/ui/metrics"
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="no prometheus binary (Debian's prometheus)"
)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("no prometheus binary (Debian's prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    (tmp / "prometheus.yml").write_text('{"scrape_configs": []}\n')
    addr = f"127.0.0.1:{free_port()}"
    log = (tmp / "log").open("w")
    proc = subprocess.Popen(
        [exe, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address={addr}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: ready(addr), 30, "Prometheus ready")
        yield addr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def ready(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/-/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(prometheus: str) -> Iterator[ServerProcess]:
    metrics = ("--ui-metrics-provider", "prometheus", "--ui-metrics-url", f"http://{prometheus}")
    with acl_server(ROOT, *metrics) as s:
        yield s


@needs_prometheus
def test_the_management_token_gets_the_providers_answer(server: ServerProcess) -> None:
    status, doc, _ = server.request("GET", PATH, None, {"X-Consul-Token": ROOT})
    assert status == 200, doc
    assert doc == {"Provider": "prometheus", "Window": "1m", "Services": {}, "Edges": []}


@needs_prometheus
def test_a_garbage_token_is_refused_before_prometheus_is_asked(server: ServerProcess) -> None:
    status, body, _ = server.request("GET", PATH, None, {"X-Consul-Token": str(uuid.uuid4())})
    assert status == 403 and "ACL not found" in str(body)


def test_without_a_provider_the_answer_is_empty_and_says_so() -> None:
    s = start_server()
    try:
        assert s.get(PATH) == {"Provider": "", "Window": "1m", "Services": {}, "Edges": []}
    finally:
        s.stop()


def test_a_provider_that_does_not_answer_is_a_502_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    s = start_server("--ui-metrics-provider", "prometheus", "--ui-metrics-url", url)
    try:
        status, body, _ = s.request("GET", PATH)
        assert status == 502 and f"cannot query Prometheus at {url}" in str(body)
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ui-metrics-provider", "prometheus"], "are given together"),
        (["--ui-metrics-url", "http://127.0.0.1:9090"], "are given together"),
        (["--ui-metrics-provider", "prometheus", "--ui-metrics-url", "file:///etc/passwd"],
         "http:// or https://"),
    ],
)  # fmt: skip
def test_the_flags_are_given_together_with_an_http_url(flags: list[str], message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "server", "--dev", *flags],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent,
    )  # fmt: skip
    assert out.returncode != 0 and message in out.stderr
