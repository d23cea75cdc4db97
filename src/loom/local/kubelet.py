"""The local kubelet: a pod's readiness and liveness probes, and what they drive.

``loom local apply`` starts one per pod whose app containers declare probes, inside the pod's
network namespace (so ``httpGet`` and ``tcpSocket`` reach the containers on 127.0.0.1, the
way the pod's own processes would, and ``exec`` runs with the container's environment). As
on Kubernetes: a container is not ready until its readiness probe succeeds; readiness of the
pod (every container ready) sets the ``Kubernetes Health Check`` of each of the pod's
services (passing or critical), so an unready pod drops out of its upstreams' endpoints (for
a multi-port pod, all its services together: seed 000's caveat); ``failureThreshold``
liveness failures in a row restart the container. Each probe's
``initialDelaySeconds``, ``periodSeconds``, ``timeoutSeconds``, ``successThreshold`` and
``failureThreshold`` mean what they mean there. What it sees is written to ``kubelet.json``
in the pod's directory (``get pods`` reads it). The probe arithmetic (``ProbeState``) is pure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom.api.client import Client, ClientError
from loom.local import processes
from loom.local.volumes import mount_argv

HEALTH_CHECK_NAME = "Kubernetes Health Check"
"""The check every service of a probed pod carries (consul-k8s names it so)."""


def health_check_id(service_id: str) -> str:
    return f"{service_id}-kubernetes-health-check"


def health_check(service_id: str) -> dict[str, str]:
    """The check registered with each service of a probed pod: critical until ready."""
    return {
        "CheckID": health_check_id(service_id),
        "Name": HEALTH_CHECK_NAME,
        "Status": "critical",
        "Notes": "the pod's readiness, as loom local's kubelet probes it",
        "Output": "the pod's readiness probes have not passed yet",
    }


def has_probes(pod: Mapping[str, Any], apps: set[str]) -> bool:
    return any(
        c.get("readinessProbe") or c.get("livenessProbe")
        for c in (pod.get("spec") or {}).get("containers") or []
        if c.get("name") in apps
    )


@dataclass
class ProbeState:
    """One probe's counters; ``record`` returns whether the probe now holds."""

    spec: Mapping[str, Any]
    ok: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0

    def start(self, now: float) -> None:
        self.next_at = now + float(self.spec.get("initialDelaySeconds", 0))

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    def record(self, success: bool, now: float) -> bool:
        self.next_at = now + self.period
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.ok = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.ok = False
        return self.ok


@dataclass
class ContainerProbes:
    name: str
    readiness: ProbeState | None
    liveness: ProbeState | None
    ports: dict[str, int] = field(default_factory=dict)
    restarts: int = 0

    @property
    def ready(self) -> bool:
        return self.readiness.ok if self.readiness is not None else True


def probe_once(spec: Mapping[str, Any], ports: Mapping[str, int], env: Mapping[str, str]) -> bool:
    """One attempt of a probe from inside the pod (``httpGet``, ``tcpSocket``, ``exec``)."""
    timeout = float(spec.get("timeoutSeconds", 1))
    for kind in ("httpGet", "tcpSocket"):
        if kind in spec:
            target = spec[kind]
            port = target.get("port")
            number = ports.get(port) if isinstance(port, str) else port
            if not isinstance(number, int):
                return False
            host = target.get("host") or "127.0.0.1"
            try:
                if kind == "tcpSocket":
                    with socket.create_connection((host, number), timeout=timeout):
                        return True
                conn = http.client.HTTPConnection(host, number, timeout=timeout)
                try:
                    headers = {h["name"]: h["value"] for h in target.get("httpHeaders") or []}
                    conn.request("GET", target.get("path") or "/", headers=headers)
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                return False
    if "exec" in spec:
        argv = [str(a) for a in spec["exec"].get("command") or []]
        try:
            done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True,
                                  timeout=timeout)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0
    return False


class Kubelet:
    """The probes of one pod (its directory holds ``pod.json``), run until stopped."""

    def __init__(self, pod_dir: Path, http_addr: str, token_file: Path | None) -> None:
        self.pod_dir = pod_dir
        token = None
        if token_file is not None and token_file.exists():
            token = token_file.read_text().strip() or None
        self.client = Client(http_addr, timeout=10, token=token)
        self.rec: dict[str, Any] = json.loads((pod_dir / "pod.json").read_text())
        pod = self.rec["kube"]["pod"]
        apps = {c["name"] for c in self.rec["containers"]}
        now = time.monotonic()
        self.containers: list[ContainerProbes] = []
        for c in pod["spec"]["containers"]:
            if c["name"] not in apps:
                continue
            probes = [ProbeState(c[k]) if c.get(k) else None
                      for k in ("readinessProbe", "livenessProbe")]  # fmt: skip
            for p in probes:
                if p is not None:
                    p.start(now)
            ports = {p["name"]: int(p["containerPort"]) for p in c.get("ports") or []
                     if p.get("name")}  # fmt: skip
            self.containers.append(ContainerProbes(c["name"], probes[0], probes[1], ports))
        self.reported: bool | None = None

    def env(self, name: str) -> dict[str, str]:
        path = self.pod_dir / f"env-{name}.json"
        with contextlib.suppress(OSError, ValueError):
            loaded: dict[str, str] = json.loads(path.read_text())
            return loaded
        return {}

    def step(self, now: float) -> float:
        """Run the probes that are due; returns when the next one is."""
        for c in self.containers:
            for probe, live in ((c.readiness, False), (c.liveness, True)):
                if probe is None or now < probe.next_at:
                    continue
                good = probe_once(probe.spec, c.ports, self.env(c.name))
                was_failing = probe.failures
                probe.record(good, now)
                threshold = int(probe.spec.get("failureThreshold", 3))
                if live and not good and was_failing + 1 >= threshold:
                    self.restart(c)
                    probe.failures = 0
                    probe.start(now)
        self.report()
        due = [p.next_at for c in self.containers for p in (c.readiness, c.liveness) if p]
        return min(due, default=now + 1.0)

    def restart(self, c: ContainerProbes) -> None:
        entry = next(e for e in self.rec["containers"] if e["name"] == c.name)
        processes.stop(entry["pid"], grace=2.0)
        mounts = [(m[0], m[1], bool(m[2])) for m in entry.get("mounts") or []]
        argv = mount_argv(mounts, entry["cmd"])
        entry["pid"] = processes.spawn(argv, Path(entry["log"]), self.env(c.name))
        c.restarts += 1
        if c.readiness is not None:
            c.readiness.ok, c.readiness.successes = False, 0
        path = self.pod_dir / "pod.json"
        current = json.loads(path.read_text())
        for e in current.get("containers", []):
            if e["name"] == c.name:
                e["pid"] = entry["pid"]
        tmp = path.with_suffix(".kubelet.tmp")
        tmp.write_text(json.dumps(current, indent=1))
        tmp.replace(path)

    def report(self) -> None:
        ready = all(c.ready for c in self.containers)
        view = {c.name: {"ready": c.ready, "restarts": c.restarts} for c in self.containers}
        tmp = self.pod_dir / "kubelet.json.tmp"
        tmp.write_text(json.dumps({"ready": ready, "containers": view}))
        tmp.replace(self.pod_dir / "kubelet.json")
        if ready == self.reported:
            return
        status = "passing" if ready else "critical"
        unready = [c.name for c in self.containers if not c.ready]
        output = "Kubernetes health checks passing" if ready else (
            f"containers not ready: {', '.join(unready)}")  # fmt: skip
        try:
            for sid in self.rec.get("services", []):
                self.client.put(f"/v1/agent/check/update/{health_check_id(sid)}",
                                {"Status": status, "Output": output})  # fmt: skip
        except ClientError:
            return  # said again at the next step
        self.reported = ready

    def run(self) -> None:
        while True:
            due = self.step(time.monotonic())
            time.sleep(max(0.05, min(due - time.monotonic(), 1.0)))
