"""kubectl habits on the local mesh: ``get``, ``describe``, targets such as ``deploy/web``.

The pods of ``loom local apply`` are recorded by the mesh (``pod.json``, with the injected
pod under ``kube``) and by the applier (``apply.json``: owners and the objects). This module
reads both and prints them as kubectl does: ``get pods|services|deployments`` as tables
(``-o wide``) or objects (``-o yaml|json``, the injected pod with a ``status``), ``describe
pod`` with the injector's decision and reasons, and turns ``deploy/NAME``, ``pod/NAME`` or a
bare name into one pod for ``exec`` and ``logs``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from loom.api.client import ClientError
from loom.local import processes
from loom.local.apply import Applier
from loom.local.errors import ManifestError
from loom.local.manifests import is_headless, service_ports
from loom.local.mesh import LocalMesh

Print = Callable[[str], None]
_KINDS = {
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "rs": "ReplicaSet", "replicaset": "ReplicaSet", "replicasets": "ReplicaSet",
    "sts": "StatefulSet", "statefulset": "StatefulSet", "statefulsets": "StatefulSet",
}  # fmt: skip


def resolve_pod(applier: Applier, target: str) -> str:
    """``deploy/NAME`` (its first running pod), ``pod/NAME`` or ``NAME``: a pod's name."""
    kind_text, sep, name = target.partition("/")
    if not sep:
        return target
    if kind_text in ("pod", "pods", "po"):
        return name
    kind = _KINDS.get(kind_text)
    if kind is None:
        raise ManifestError(f"{target}: expected pod/NAME, deploy/NAME, rs/NAME or sts/NAME")
    state = applier.load()
    owned = sorted(
        n for n, p in state["pods"].items()
        if p["owner"].startswith(f"{kind}/") and p["owner"].endswith(f"/{name}")
    )  # fmt: skip
    if not owned:
        raise ManifestError(f'{kind.lower()}s.apps "{name}" has no pods (or does not exist)')
    return str(owned[0])


def _age(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s}s" if s < 120 else (f"{s // 60}m" if s < 7200 else f"{s // 3600}h")


def _age_of(applied: dict[str, Any]) -> str:
    return _age(time.time() - float(applied.get("created", time.time())))


def pod_status(rec: dict[str, Any]) -> dict[str, Any]:
    """Containers alive, ready count and phase, from the mesh's record."""
    apps = rec.get("containers") or []
    sidecars = rec.get("sidecars") or []
    seen = _kubelet_view(rec)
    alive = [processes.alive(c["pid"]) for c in apps] + [
        processes.alive(s["pid"]) for s in sidecars
    ]
    ready = [
        a and seen.get(c["name"], {}).get("ready", True) for a, c in zip(alive, apps, strict=False)
    ]
    ready += alive[len(apps) :]
    restarts = sum(int(v.get("restarts", 0)) for v in seen.values())
    phase = "Running" if alive and all(alive) else ("Error" if alive else "Pending")
    return {"ready": f"{sum(ready)}/{len(ready)}", "phase": phase,
            "ip": rec.get("ip", "<none>"), "restarts": str(restarts)}  # fmt: skip


def _kubelet_view(rec: dict[str, Any]) -> dict[str, Any]:
    """What the pod's kubelet last saw (empty for a pod without probes); before its first
    report, a container with a readiness probe is not ready."""
    if not rec.get("kubelet") or not rec.get("containers"):
        return {}
    path = Path(rec["containers"][0]["log"]).parent / "kubelet.json"
    try:
        seen: dict[str, Any] = json.loads(path.read_text())["containers"]
    except (OSError, ValueError, KeyError):
        spec = ((rec.get("kube") or {}).get("pod") or {}).get("spec") or {}
        return {c["name"]: {"ready": not c.get("readinessProbe"), "restarts": 0}
                for c in spec.get("containers") or []}  # fmt: skip
    return seen


def pod_object(rec: dict[str, Any]) -> dict[str, Any]:
    """The injected pod as ``kubectl get pod -o yaml`` shows it, with a status."""
    kube = rec.get("kube") or {}
    pod: dict[str, Any] = json.loads(
        json.dumps(kube.get("pod") or {"metadata": {"name": rec["name"]}})
    )
    status = pod_status(rec)
    apps = {c["name"]: c for c in rec.get("containers") or []}
    seen = _kubelet_view(rec)
    pod["status"] = {
        "phase": status["phase"],
        "podIP": status["ip"],
        "containerStatuses": [
            {
                "name": name,
                "ready": processes.alive(c["pid"]) and seen.get(name, {}).get("ready", True),
                "restartCount": int(seen.get(name, {}).get("restarts", 0)),
                "state": {"running": {}} if processes.alive(c["pid"]) else {"terminated": {}},
            }
            for name, c in apps.items()
        ],
    }
    return pod


def get(applier: Applier, what: str, name: str | None, output: str | None, out: Print) -> int:
    """``get pods|services|deployments [NAME]``."""
    kind = {"po": "pods", "pod": "pods", "svc": "services", "service": "services",
            "deploy": "deployments", "deployment": "deployments"}.get(what, what)  # fmt: skip
    if kind not in ("pods", "services", "deployments"):
        raise ManifestError(f"get {what}: expected pods, services or deployments")
    state = applier.load()
    mesh = applier.mesh
    if kind == "pods":
        names = [resolve_pod(applier, name)] if name else sorted(state["pods"])
        recs = [mesh.record(n) for n in names]
        if name and recs[0] is None:
            raise ManifestError(f'pods "{name}" not found')
        found = [r for r in recs if r is not None]
        if output in ("yaml", "json"):
            items = [pod_object(r) for r in found]
            return _dump(items[0] if name else {"apiVersion": "v1", "kind": "List",
                                                "items": items}, output, out)  # fmt: skip
        head = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        table = []
        for r in found:
            st = pod_status(r)
            age = _age(time.time() - float(r.get("created", time.time())))
            row = [r["name"], st["ready"], st["phase"], st["restarts"], age]
            if output == "wide":
                row += [st["ip"], "loom-local"]
            table.append(row)
        if output == "wide":
            head += ["IP", "NODE"]
        return _table(head, table, out)
    objs = [v for v in state["objects"].values()
            if v["kind"] == ("Service" if kind == "services" else "Deployment")
            and (name is None or v["name"] == name)]  # fmt: skip
    if name and not objs:
        raise ManifestError(f'{kind} "{name}" not found')
    if output in ("yaml", "json"):
        items = [v["body"] for v in objs]
        return _dump(items[0] if name else {"apiVersion": "v1", "kind": "List",
                                            "items": items}, output, out)  # fmt: skip
    if kind == "services":
        vips = _mesh_vips(applier)
        rows = []
        for v in objs:
            obj = applier.applied({"objects": {"k": v}})[0]
            ports = ",".join(f"{p.port}/{p.protocol}" for p in service_ports(obj)) or "<none>"
            ip = "None" if is_headless(obj) else vips.get(v["name"], "<pending>")
            row = [v["name"], "ClusterIP", ip, "<none>", ports, _age_of(v)]
            if output == "wide":
                sel = (v["body"].get("spec") or {}).get("selector") or {}
                row.append(",".join(f"{k}={val}" for k, val in sel.items()) or "<none>")
            rows.append(row)
        head = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
        return _table(head + (["SELECTOR"] if output == "wide" else []), rows, out)
    rows = []
    for v in objs:
        key = f"Deployment/{v['namespace']}/{v['name']}"
        pods = [mesh.record(n) for n, p in state["pods"].items() if p["owner"] == key]
        ready = sum(1 for r in pods if r and pod_status(r)["phase"] == "Running")
        want = (v["body"].get("spec") or {}).get("replicas", 1)
        rows.append([v["name"], f"{ready}/{want}", str(len(pods)), str(ready), _age_of(v)])
    return _table(["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], rows, out)


def _mesh_vips(applier: Applier) -> dict[str, str]:
    """Service name -> its virtual IP in the mesh (what the DNS proxy answers)."""
    try:
        table = applier.mesh.client().get("/v1/loom/dns-table")
    except ClientError:
        return {}
    return {s["Name"]: s["VirtualIPs"][0] for s in table.get("Services", []) if s["VirtualIPs"]}


def _dump(obj: Any, output: str, out: Print) -> int:
    if output == "json":
        out(json.dumps(obj, indent=4))
    else:
        out(yaml.safe_dump(obj, sort_keys=False).rstrip())
    return 0


def _table(head: list[str], rows: list[list[str]], out: Print) -> int:
    if not rows:
        out("No resources found in default namespace.")
        return 0
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        out("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def describe_pod(applier: Applier, target: str, out: Print) -> int:
    """``describe pod NAME``: what runs, and why the injector decided as it did."""
    name = resolve_pod(applier, target)
    rec = applier.mesh.record(name)
    if rec is None:
        raise ManifestError(f'pods "{name}" not found')
    kube = rec.get("kube") or {}
    pod = kube.get("pod") or {}
    meta = pod.get("metadata") or {}
    st = pod_status(rec)
    out(f"Name:             {name}")
    out(f"Namespace:        {kube.get('namespace', 'default')}")
    out(f"Service Account:  {(pod.get('spec') or {}).get('serviceAccountName', 'default')}")
    out(f"Node:             loom-local/{applier.mesh.s.net.gateway}")
    out(f"Status:           {st['phase']}")
    out(f"IP:               {st['ip']}")
    owner = kube.get("owner")
    out(
        f"Controlled By:    {owner.split('/')[0] + '/' + owner.rsplit('/', 1)[1] if owner else '-'}"
    )
    out("Labels:           " + (", ".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items())
                              or "<none>"))  # fmt: skip
    out("Annotations:")
    for k, v in (meta.get("annotations") or {}).items():
        if k != "consul.hashicorp.com/original-pod":
            out(f"  {k}: {v}")
    out("Injection:")
    out(f"  Decision:       {'injected' if kube.get('inject') else 'not injected'}")
    for reason in kube.get("reasons") or []:
        out(f"  - {reason}")
    out("Init Containers:")
    for c in (pod.get("spec") or {}).get("initContainers") or []:
        out(f"  {c['name']}: {' '.join(c.get('command') or [])} (done by loom local: "
            "registration, login, redirection)")  # fmt: skip
    out("Containers:")
    procs = {c["name"]: c for c in rec.get("containers") or []}
    side = {s["proxy_id"]: s for s in rec.get("sidecars") or []}
    for c in (pod.get("spec") or {}).get("containers") or []:
        proc = procs.get(c["name"])
        ports = ",".join(str(p.get("containerPort")) for p in c.get("ports") or []) or "<none>"
        if proc is not None:
            state = "Running" if processes.alive(proc["pid"]) else "Terminated"
            out(f"  {c['name']}: image {c.get('image')}, ports {ports}, {state}")
            out(f"    Command: {' '.join(proc['cmd'])}")
        else:
            alive = [s for s in side.values() if processes.alive(s["pid"])]
            out(f"  {c['name']}: image {c.get('image')} (loom dataplane), "
                f"{len(alive)}/{len(side)} sidecars running")  # fmt: skip
    return 0


def ps_rows(mesh: LocalMesh) -> list[dict[str, Any]]:
    """``loom local ps``: every pod, its address, app, sidecars and services."""
    rows = []
    for name in mesh.names():
        rec = mesh.record(name) or {"name": name}
        app = rec.get("app")
        sidecars = rec.get("sidecars", [])
        up = sum(processes.alive(x["pid"]) for x in sidecars)
        state = "-" if not app else ("running" if processes.alive(app["pid"]) else "exited")
        rows.append({
            "name": name,
            "ip": rec.get("ip", "?"),
            "services": [s.removeprefix(f"{name}-") for s in rec.get("services", [])],
            "app": state,
            "sidecars": f"{up}/{len(sidecars)}",
        })  # fmt: skip
    return rows
