"""The local mesh's Prometheus (``loom local up --prometheus``): scrapes every sidecar.

A real Prometheus (Debian's ``prometheus``) runs in the node namespace, where the bridge
reaches every pod's address, on that namespace's loopback; ``forward.py`` makes it reachable
on the host's loopback (``LocalSettings.prometheus_addr``). While it runs, the mesh's
injection defaults have metrics on (``connectInject.metrics.defaultEnabled``), so each pod's
first sidecar serves its merged metrics on the scrape port (excluded from redirection) and
its pod record names that target. The targets are a ``file_sd`` file rewritten whenever a pod
comes or goes (Prometheus watches it), each target labelled with its pod (the service is the
sidecar's own ``loom_dataplane_info{service=...}``, which a target label of the same name
would rename). The local server is started with this Prometheus as the web UI's metrics
provider. The PIDs are recorded the moment they are spawned, so ``down`` finds them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.local import processes
from loom.local.errors import LocalError, state_io
from loom.local.netns import netns_exec_argv

if TYPE_CHECKING:
    from loom.local.settings import LocalSettings

NODE_ADDR = "127.0.0.1:9090"
"""Where Prometheus listens inside the node namespace (not reachable from the pods)."""
SCRAPE_INTERVAL = "5s"
JOB = "loom-sidecars"


def _dir(s: LocalSettings) -> Path:
    return s.net.state_dir / "prometheus"


def _record(s: LocalSettings) -> Path:
    return s.net.state_dir / "prometheus.json"


def targets_file(s: LocalSettings) -> Path:
    """The ``file_sd`` targets: one entry per pod serving metrics."""
    return _dir(s) / "targets.json"


def enabled(s: LocalSettings) -> bool:
    """Whether ``up --prometheus`` started one (pods then serve metrics). False when the
    state directory cannot be read (not root: the command then says it needs root)."""
    try:
        return _record(s).exists()
    except OSError:
        return False


def scraped_settings(s: LocalSettings) -> LocalSettings:
    """``s`` with metrics on by default while the Prometheus runs (as a cluster with
    ``connectInject.metrics.defaultEnabled``); a pod's annotation may still say no."""
    if not enabled(s) or s.inject.metrics.enabled:
        return s
    metrics = dataclasses.replace(s.inject.metrics, enabled=True)
    return dataclasses.replace(s, inject=dataclasses.replace(s.inject, metrics=metrics))


def _pids(s: LocalSettings) -> dict[str, int]:
    try:
        data = json.loads(_record(s).read_text())
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in data.items() if k in ("pid", "forward_pid")}


def config_text(s: LocalSettings) -> str:
    """prometheus.yml: one job over the targets file (JSON is YAML)."""
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": JOB,
            "file_sd_configs": [{"files": [str(targets_file(s))], "refresh_interval": "30s"}],
        }],
    }  # fmt: skip
    return json.dumps(config, indent=1) + "\n"


def targets(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``file_sd`` entries of the pods' records that name a metrics target."""
    out = []
    for rec in records:
        m = rec.get("metrics")
        if not m:
            continue
        labels = {"pod": rec["name"], "__metrics_path__": m["path"]}
        out.append({"targets": [m["target"]], "labels": labels})
    return sorted(out, key=lambda e: e["labels"]["pod"])


def write_targets(s: LocalSettings, records: Iterable[Mapping[str, Any]]) -> None:
    """Rewrite the targets file atomically (Prometheus notices the rename)."""
    if not enabled(s):
        return
    path = targets_file(s)
    with state_io(f"cannot write {path}"):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets(records), indent=1) + "\n")
        tmp.replace(path)


def _listen(addr: str) -> socket.socket:
    host, _, port = addr.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise LocalError(f"cannot listen on {addr} for Prometheus: {exc.strerror}") from exc
    return sock


def start(s: LocalSettings, records: Iterable[Mapping[str, Any]]) -> None:
    """Prometheus in the node namespace and its forwarder on ``s.prometheus_addr``; ready
    when its ``/-/ready`` answers there. Nothing when one runs already."""
    pids = _pids(s)
    if pids and all(processes.alive(p) for p in pids.values()):
        return
    stop(s)
    exe = shutil.which("prometheus")
    if exe is None:
        raise LocalError("--prometheus: no prometheus binary (install Debian's prometheus)")
    base = _dir(s)
    with state_io(f"cannot make {base}"):
        (base / "data").mkdir(parents=True, exist_ok=True)
        (base / "prometheus.yml").write_text(config_text(s))
        _record(s).write_text("{}")
    write_targets(s, records)
    log = base / "prometheus.log"
    argv = netns_exec_argv(s.net.node_netns, [
        exe, f"--config.file={base / 'prometheus.yml'}",
        f"--storage.tsdb.path={base / 'data'}", f"--web.listen-address={NODE_ADDR}",
        "--storage.tsdb.retention.time=1d",
    ])  # fmt: skip
    try:
        pid = processes.spawn(argv, log)
        _save(s, pid=pid)
        sock = _listen(s.prometheus_addr)
        try:
            os.set_inheritable(sock.fileno(), True)
            fwd = [sys.executable, "-m", "loom.local.forward",
                   "--fd", str(sock.fileno()), "--to", NODE_ADDR]  # fmt: skip
            fpid = processes.spawn(netns_exec_argv(s.net.node_netns, fwd), base / "forward.log")
        finally:
            sock.close()
        _save(s, pid=pid, forward_pid=fpid)
        _wait_ready(s, pid, log)
    except BaseException:
        stop(s)
        raise


def _save(s: LocalSettings, **pids: int) -> None:
    with state_io("cannot record the local Prometheus"):
        _record(s).write_text(json.dumps(pids))


def _wait_ready(s: LocalSettings, pid: int, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{s.prometheus_addr}/-/ready"
    while True:
        if not processes.alive(pid):
            raise LocalError(f"Prometheus exited: {processes.tail(log, 3)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise LocalError(f"Prometheus not ready in time: {processes.tail(log, 3)}")
        time.sleep(0.2)


def stop(s: LocalSettings) -> None:
    """Stop Prometheus and the forwarder; remove their files (the data too)."""
    for pid in _pids(s).values():
        processes.stop(pid)
    shutil.rmtree(_dir(s), ignore_errors=True)
    with state_io("cannot remove the Prometheus record"):
        _record(s).unlink(missing_ok=True)
