"""`loom k8s controller` against a real `loom server --dev` and a Kubernetes API stand-in.

A Kubernetes API server cannot run here, so ``FakeKubeApi`` is a TEST DOUBLE: a small aiohttp
app serving ``GET /api/v1/{pods,services,namespaces}`` (list, and ``?watch=true`` streaming
JSON-line events from a resourceVersion, a BOOKMARK first when asked for bookmarks, and, as
a v1.24 API server does for a version it compacted away, an ERROR event with a 410 Status) —
only what the controller's informers call. The
Loom server, the controller process (talking to the stand-in through a kubeconfig file, via
lightkube) and `loom k8s connect-init` are all real.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.unit.inject.test_controller import SETTINGS, injected_pod, k8s_service

LIST_KINDS = {"pods": "PodList", "services": "ServiceList", "namespaces": "NamespaceList"}


class FakeKubeApi:
    """Test double of the Kubernetes API server (list + watch of three kinds), in a thread."""

    def __init__(self) -> None:
        self.version = 1
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in LIST_KINDS}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.compacted = 0
        """Watches from a version below this one are answered 410 Gone."""
        self.bookmark_requests = 0
        self.changed: asyncio.Condition | None = None
        self.watchers: set[asyncio.Task[Any]] = set()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> FakeKubeApi:
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        for kind in LIST_KINDS:
            app.router.add_get(f"/api/v1/{kind}", self._handler(kind))
            if kind != "namespaces":
                app.router.add_get(f"/api/v1/namespaces/{{ns}}/{kind}", self._handler(kind))
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.changed = asyncio.Condition()
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            for task in self.watchers:  # open watch streams never end by themselves
                task.cancel()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _handler(self, kind: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            ns = request.match_info.get("ns")

            def wanted(obj: dict[str, Any]) -> bool:
                return ns is None or obj["metadata"].get("namespace") == ns

            if request.query.get("watch") != "true":
                return web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": LIST_KINDS[kind],
                        "metadata": {"resourceVersion": str(self.version)},
                        "items": [o for o in self.objects[kind].values() if wanted(o)],
                    }
                )
            since = int(request.query.get("resourceVersion") or 0)
            task = asyncio.current_task()
            assert task is not None
            self.watchers.add(task)
            resp = web.StreamResponse()
            resp.content_type = "application/json"
            await resp.prepare(request)
            assert self.changed is not None
            if request.query.get("allowWatchBookmarks") == "true":
                self.bookmark_requests += 1
                mark = {"kind": LIST_KINDS[kind][:-4], "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(max(since, self.version))}}  # fmt: skip
                await resp.write((json.dumps({"type": "BOOKMARK", "object": mark}) + "\n").encode())
            while True:
                if since < self.compacted:
                    gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": f"too old resource version: {since} ({self.compacted})",
                            "reason": "Expired", "code": 410}  # fmt: skip
                    await resp.write((json.dumps({"type": "ERROR", "object": gone}) + "\n").encode())
                    return resp
                for version, k, event, obj in list(self.history):
                    if k == kind and version > since and wanted(obj):
                        line = json.dumps({"type": event, "object": obj}) + "\n"
                        await resp.write(line.encode())
                        since = version
                async with self.changed:
                    await self.changed.wait()

        return handle

    def expire_watches(self) -> None:
        """Compact history (as etcd does): every open watch ends with 410 Gone."""

        async def expire() -> None:
            assert self.changed is not None
            self.version += 1
            self.compacted = self.version
            async with self.changed:
                self.changed.notify_all()

        asyncio.run_coroutine_threadsafe(expire(), self.loop).result(10)

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """ADDED / MODIFIED / DELETED ``obj`` (from the test's thread)."""

        async def change() -> None:
            assert self.changed is not None
            self.version += 1
            doc = copy.deepcopy(obj)
            doc["metadata"]["resourceVersion"] = str(self.version)
            key = (doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
            if event == "DELETED":
                self.objects[kind].pop(key, None)
            else:
                self.objects[kind][key] = doc
            self.history.append((self.version, kind, event, doc))
            async with self.changed:
                self.changed.notify_all()

        asyncio.run_coroutine_threadsafe(change(), self.loop).result(10)


def kubeconfig(path: Path, port: int) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "test", "user": {}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "test"}}],
                "current-context": "fake",
            }
        )
    )
    return path


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    api = FakeKubeApi().start()
    api.apply("namespaces", "ADDED", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": "default"}})  # fmt: skip
    yield api
    api.stop()


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    logs: list[Any] = []

    def start(http_addr: str, port: int, *extra: str) -> subprocess.Popen[str]:
        log = (tmp_path / f"controller-{len(started)}.log").open("w")
        logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "loom", "k8s", "controller", "--http-addr", http_addr,
             "--kubeconfig", str(kubeconfig(tmp_path / "kubeconfig", port)), *extra],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


def wait_for(what: str, probe: Callable[[], Any], log: Path, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; controller log:\n{log.read_text()}")


def test_a_pod_is_registered_when_it_appears_and_deregistered_when_deleted(
    loom_server, kube_api, controller, tmp_path
) -> None:
    log = tmp_path / "controller-0.log"
    kube_api.apply("services", "ADDED", k8s_service("api", "10.96.0.10", 80, 8080))
    controller(loom_server.http, kube_api.port)
    wait_for("the initial list", lambda: "listed 1 namespaces" in log.read_text(), log)

    pod = injected_pod("api-7f9c", container="api", ip="10.0.0.7")
    kube_api.apply("pods", "ADDED", pod)
    services = wait_for(
        "the registration",
        lambda: (
            (s := loom_server.get("/v1/agent/services")).get("api-7f9c-api-sidecar-proxy") and s
        ),
        log,
    )
    instance = services["api-7f9c-api"]
    assert instance["Address"] == "10.0.0.7" and instance["Port"] == 8080
    assert instance["Meta"]["pod-name"] == "api-7f9c"
    assert instance["Meta"]["k8s-namespace"] == "default"
    assert instance["TaggedAddresses"]["virtual"] == {"Address": "10.96.0.10", "Port": 80}
    assert services["api-7f9c-api-sidecar-proxy"]["Port"] == 20000
    checks = loom_server.get("/v1/agent/checks")
    assert checks["api-7f9c-api/kubernetes-readiness"]["Status"] == "passing"

    # connect-init, run as the injected init container would, finds the registration.
    out = tmp_path / "connect-inject"
    init = subprocess.run(
        [sys.executable, "-m", "loom", "k8s", "connect-init", "--http-addr", loom_server.http,
         "--pod-name", "api-7f9c", "--pod-namespace", "default", "--output-dir", str(out),
         "--timeout", "10"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    assert (out / "proxyid").read_text() == "api-7f9c-api-sidecar-proxy"

    [healthy] = loom_server.get("/v1/health/connect/api?passing=1")
    assert healthy["Service"]["ID"] == "api-7f9c-api-sidecar-proxy"

    # The pod stops being ready: it stays registered but its check fails.
    kube_api.apply("pods", "MODIFIED", injected_pod("api-7f9c", container="api",
                                                    ip="10.0.0.7", ready=False))  # fmt: skip
    wait_for(
        "the failing check",
        lambda: (
            loom_server.get("/v1/agent/checks")["api-7f9c-api/kubernetes-readiness"]["Status"]
            == "critical"
        ),
        log,
    )
    # ... so the mesh's health-filtered view sends it no traffic.
    assert loom_server.get("/v1/health/connect/api?passing=1") == []

    kube_api.apply("pods", "DELETED", pod)
    wait_for(
        "the deregistration",
        lambda: (
            not any(sid.startswith("api-7f9c") for sid in loom_server.get("/v1/agent/services"))
        ),
        log,
    )
    # The log line follows the write it reports.
    wait_for(
        "the log line",
        lambda: "deregistered api-7f9c-api (its pod is gone)" in log.read_text(),
        log,
    )


def test_expired_watches_are_listed_again_at_once_without_any_backoff(
    loom_server, kube_api, controller, tmp_path
) -> None:
    log = tmp_path / "controller-0.log"
    controller(loom_server.http, kube_api.port)
    wait_for("the initial list", lambda: "listed 1 namespaces" in log.read_text(), log)
    wait_for("three watches asking for bookmarks", lambda: kube_api.bookmark_requests >= 3, log)
    # Six expiries in a row: with a backoff that never resets, the sixth would wait 16 s.
    for n in range(1, 7):
        kube_api.expire_watches()
        wait_for(
            f"expiry {n} noticed by all three informers",
            lambda n=n: log.read_text().count("expired (too old resource version") >= 3 * n,
            log,
        )
        pod = injected_pod(f"web-{n}", container="web", ip=f"10.0.0.{10 + n}")
        kube_api.apply("pods", "ADDED", pod)
        wait_for(
            f"the pod made after expiry {n}",
            lambda n=n: f"web-{n}-web" in loom_server.get("/v1/agent/services"),
            log,
            timeout=5.0,
        )
    text = log.read_text()
    assert "retrying in" not in text and "Traceback" not in text


def test_an_unreachable_api_server_is_one_clear_line_then_a_retry(
    loom_server, controller, tmp_path
) -> None:
    log = tmp_path / "controller-0.log"
    proc = controller(loom_server.http, 1)  # nothing listens on port 1
    text = wait_for(
        "two failures of the list",
        lambda: (t := log.read_text()).count("kubernetes API: list pods failed") >= 2 and t,
        log,
    )
    assert proc.poll() is None
    assert "Traceback" not in text
    assert "retrying in 0.5s" in text and "retrying in 1.0s" in text


def test_an_unreachable_loom_server_is_one_clear_line_then_a_retry(kube_api, controller, tmp_path):
    log = tmp_path / "controller-0.log"
    proc = controller("127.0.0.1:1", kube_api.port)  # nothing listens on port 1
    text = wait_for(
        "two failed reconciles",
        lambda: (t := log.read_text()).count("loom server 127.0.0.1:1: ") >= 2 and t,
        log,
    )
    assert proc.poll() is None
    assert "Traceback" not in text
    assert "retrying in 0.5s" in text and "retrying in 1.0s" in text


def test_a_missing_kubeconfig_is_a_one_line_error(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "loom", "k8s", "controller", "--kubeconfig",
         str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1].startswith(
        f"loom: cannot load a kubeconfig from {tmp_path / 'nope.yaml'}: "
    )
    assert "Traceback" not in run.stderr


def test_with_namespace_only_that_namespace_is_registered_and_others_are_left_alone(
    loom_server, kube_api, controller, tmp_path
) -> None:
    log = tmp_path / "controller-0.log"
    # Registered earlier by a controller watching team-b: not this one's to remove.
    other = injected_pod("db-1", container="db", namespace="team-b", ip="10.0.1.9")
    kube_api.apply("pods", "ADDED", other)
    from loom.k8s.controller import reconcile

    [body] = reconcile([other], [], [], SETTINGS).register
    loom_server.put("/v1/agent/service/register", body)

    kube_api.apply("pods", "ADDED", injected_pod("api-1", container="api", namespace="team-a"))
    kube_api.apply("pods", "ADDED", injected_pod("web-1", container="web", namespace="team-b"))
    controller(loom_server.http, kube_api.port, "--namespace", "team-a")
    wait_for("team-a's pod", lambda: "api-1-api" in loom_server.get("/v1/agent/services"), log)
    kube_api.apply("pods", "DELETED", other)
    # Its own address: two running pods never share one, and sidecars on one address and
    # port are refused (they would split connections).
    kube_api.apply("pods", "ADDED", injected_pod("api-2", container="api", namespace="team-a",
                                                 ip="10.0.0.8"))  # fmt: skip
    wait_for("the second pod", lambda: "api-2-api" in loom_server.get("/v1/agent/services"), log)
    services = loom_server.get("/v1/agent/services")
    assert "web-1-web" not in services  # another namespace: not watched
    assert "db-1-db" in services  # another namespace's registration: kept
