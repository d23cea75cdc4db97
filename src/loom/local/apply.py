"""``loom local apply -f`` and ``delete``: Kubernetes manifests run on the local mesh.

Reads the sources (files, directories of ``.yaml``/``.yml``/``.json``, ``-`` for stdin),
checks the whole set (``manifests.expand`` then ``pods.plan_pods``: kinds, names, namespaces,
service accounts, images, the injector's verdict) and only then acts: objects are recorded
in ``<state-dir>/apply.json`` (the desired state), mesh CRDs are written as config entries,
and each pod runs through ``LocalMesh.run_pod``, the path ``loom local run`` takes, with the
injected pod's plan. Re-applying the same objects changes nothing (their digests are equal);
a changed pod template makes new pods (new names), and the old ones are removed once the new
ones run, as a rolling update would. Messages are kubectl's (``deployment.apps/web created``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from loom.api.client import ClientError, NotFoundError
from loom.local import nodedns
from loom.local.errors import LocalServerError, ManifestError, state_io
from loom.local.images import ImageMap, container_env, parse_image_flags
from loom.local.kubelet import has_probes
from loom.local.manifests import (
    CRD_KINDS,
    WORKLOAD_KINDS,
    KubeObject,
    config_entry,
    expand,
    parse_documents,
)
from loom.local.mesh import LocalMesh
from loom.local.pods import AppContainer, Known, PodRun, headless_hosts, plan_pods, pod_context
from loom.local.workload import AppProcess

Print = Callable[[str], None]
_SUFFIXES = (".yaml", ".yml", ".json")


def read_sources(paths: Sequence[str], stdin: Callable[[], str] | None = None) -> list[KubeObject]:
    """The objects of every ``-f`` source, in order."""
    objects: list[KubeObject] = []
    for given in paths:
        if given == "-":
            objects += parse_documents((stdin or sys.stdin.read)(), "<stdin>")
            continue
        path = Path(given)
        files = (
            sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES) if path.is_dir() else [path]
        )
        for file in files:
            try:
                text = file.read_text()
            except OSError as exc:
                raise ManifestError(f"{file}: cannot read it: {exc.strerror or exc}") from exc
            objects += parse_documents(text, str(file))
    if not objects:
        raise ManifestError(f"no objects in {', '.join(paths)}")
    return objects


def image_map(flags: Sequence[str], files: Sequence[str]) -> ImageMap:
    """The built-ins, then each mapping file (YAML/JSON ``IMAGE: COMMAND``), then flags."""
    images = ImageMap()
    for name in files:
        try:
            loaded = yaml.safe_load(Path(name).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ManifestError(f"image map {name}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ManifestError(f"image map {name}: expected a mapping IMAGE: COMMAND")
        images = images.with_entries(loaded, f"image map {name}")
    return images.with_entries(parse_image_flags(flags), "--image-map")


def missing_programs(images: ImageMap) -> set[str]:
    return {
        p.required for p in images.entries.values() if p.required and not shutil.which(p.required)
    }


def check_mount_targets(runs: Sequence[PodRun]) -> None:
    """A bind mount needs its target on the host (containers share its filesystem)."""
    for run in runs:
        for c in run.containers:
            for m in c.mounts:
                if not os.path.exists(m.target):
                    raise ManifestError(
                        f"pod {run.desired.name} container {c.name}: mountPath {m.target} does "
                        "not exist on this machine (containers share its filesystem: make it "
                        "or mount elsewhere)"
                    )
                if not m.source and not os.path.isdir(m.target):
                    raise ManifestError(f"pod {run.desired.name} container {c.name}: mountPath "
                                        f"{m.target} is not a directory")  # fmt: skip


class Applier:
    """The desired state of the manifests applied to one local mesh."""

    def __init__(self, mesh: LocalMesh, out: Print = print) -> None:
        self.mesh = mesh
        self.out = out
        self.file = mesh.s.apply_file

    # -- state --------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.file.read_text())
        except FileNotFoundError:
            return {"objects": {}, "pods": {}}
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{self.file}: not a loom local apply state file") from exc
        return data

    def save(self, state: dict[str, Any]) -> None:
        with state_io(f"cannot write {self.file}"):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
            tmp.replace(self.file)

    def applied(self, state: dict[str, Any]) -> list[KubeObject]:
        return [
            KubeObject(v["kind"], v["namespace"], v["name"], v["body"], "applied")
            for v in state["objects"].values()
        ]

    # -- apply --------------------------------------------------------------------------

    def apply(self, objects: Sequence[KubeObject], images: ImageMap) -> list[PodRun]:
        """Check everything, then make what differs from the applied state."""
        mset = expand(objects)
        state = self.load()
        known = Known.of([*self.applied(state), *mset.objects])
        runs = plan_pods(mset, known, images, self.mesh.s.inject, missing_programs(images))
        check_mount_targets(runs)
        self.mesh.up()
        by_owner: dict[str, list[PodRun]] = {}
        for run in runs:
            owner = run.desired.owner or f"Pod/{run.desired.namespace}/{run.desired.name}"
            by_owner.setdefault(owner, []).append(run)
        for obj in mset.objects:
            before = state["objects"].get(obj.key)
            changed = before is None or before["digest"] != obj.digest()
            if obj.kind in CRD_KINDS and changed:
                self._write_entry(obj)
            created = before["created"] if before and "created" in before else time.time()
            state["objects"][obj.key] = {
                "created": created,
                "kind": obj.kind, "namespace": obj.namespace, "name": obj.name,
                "body": obj.body, "digest": obj.digest(),
            }  # fmt: skip
            self.save(state)
            if obj.kind in WORKLOAD_KINDS or obj.kind == "Pod":
                self._converge(obj.key, by_owner.get(obj.key, []), known, state)
            verb = "created" if before is None else ("configured" if changed else "unchanged")
            self.out(f"{obj.ref} {verb}")
        self.sync_dns(state)
        return runs

    def sync_dns(self, state: dict[str, Any]) -> None:
        """The node DNS answers the headless Services' names with their pods' addresses."""
        pods = []
        for name, p in state["pods"].items():
            rec = self.mesh.record(name)
            pod = ((rec or {}).get("kube") or {}).get("pod") or {}
            if rec and "ip" in rec:
                labels = (pod.get("metadata") or {}).get("labels") or {}
                pods.append((name, p["namespace"], labels, rec["ip"]))
        services = [o for o in self.applied(state) if o.kind == "Service"]
        nodedns.set_owned_hosts(self.mesh.s, "loom-local-apply", headless_hosts(services, pods))

    def _converge(
        self, owner: str, runs: list[PodRun], known: Known, state: dict[str, Any]
    ) -> None:
        """The owner's pods become ``runs``: new ones started, then stale ones removed."""
        pods = state["pods"]
        wanted = {r.desired.name for r in runs}
        for run in runs:
            have = pods.get(run.desired.name)
            same = have is not None and have["digest"] == run.desired.digest()
            if same and self.mesh.record(run.desired.name) is not None:
                continue
            if have is not None or self.mesh.record(run.desired.name) is not None:
                self._remove_pod(run.desired.name, state)  # a bare Pod changed: replace it
            self._start(run, known)
            pods[run.desired.name] = {
                "owner": owner, "namespace": run.desired.namespace,
                "digest": run.desired.digest(),
            }  # fmt: skip
            self.save(state)
        for name in [n for n, p in pods.items() if p["owner"] == owner and n not in wanted]:
            self._remove_pod(name, state)

    def _start(self, run: PodRun, known: Known) -> None:
        desired = run.desired

        def env_of(spec: Any) -> Callable[[str], dict[str, str]]:
            return lambda ip: container_env(spec, pod_context(desired, known, ip))

        volumes = Path("volumes")
        files: dict[str, tuple[str, int] | None] = {str(volumes / v): None for v in run.volumes}
        files.update({str(volumes / v / f.path): (f.content, f.mode)
                      for v, fs in run.volumes.items() for f in fs})  # fmt: skip
        pod_dir = self.mesh.s.pods_dir / desired.name

        def mounts_of(c: AppContainer) -> tuple[tuple[str, str, bool], ...]:
            return tuple((str(pod_dir / volumes / m.volume / m.source), m.target, m.read_only)
                         for m in c.mounts)  # fmt: skip

        apps = [AppProcess(c.name, c.argv, env_of(c.spec), mounts_of(c)) for c in run.containers]
        extra = {
            "kube": {
                "namespace": desired.namespace,
                "owner": desired.owner,
                "pod": run.pod,
                "inject": run.injection.inject,
                "reasons": list(run.injection.reasons),
            }
        }
        plan = run.injection.plan
        account = desired.service_account
        self.mesh.run_pod(desired.name, plan, apps, service_account=account,
                          namespace=desired.namespace, extra=extra,
                          accounts=run.accounts, files=files,
                          probed=has_probes(run.pod, {c.name for c in run.containers}))  # fmt: skip

    def _write_entry(self, obj: KubeObject) -> None:
        try:
            self.mesh.client().put("/v1/config", config_entry(obj, self.mesh.s.datacenter))
        except ClientError as exc:
            raise LocalServerError(
                f"{obj.ref}: the server refused the config entry: {exc}"
            ) from exc

    def _remove_pod(self, name: str, state: dict[str, Any]) -> None:
        if self.mesh.record(name) is not None or self.mesh.pods.get_pod(name) is not None:
            self.mesh.rm(name)
        state["pods"].pop(name, None)
        self.save(state)

    # -- delete -------------------------------------------------------------------------

    def delete(self, objects: Sequence[KubeObject]) -> bool:
        """Remove the objects (and the pods they made) from the mesh and the state; False
        when one of them was not there (kubectl's exit 1)."""
        state = self.load()
        found = True
        keys = [o.key for o in expand(objects).objects]
        for key in reversed(keys):
            obj = state["objects"].get(key)
            kind, name = key.split("/", 1)[0], key.rsplit("/", 1)[1]
            shown = next(o for o in objects if o.key == key).ref.split("/")[0]
            if obj is None:
                print(f'Error from server (NotFound): {shown} "{name}" not found', file=sys.stderr)
                found = False
                continue
            for pod in [n for n, p in state["pods"].items() if p["owner"] == key]:
                self._remove_pod(pod, state)
            if kind == "Pod":
                self._remove_pod(name, state)
            if kind in CRD_KINDS:
                applied = self.applied({"objects": {key: obj}})[0]
                entry = config_entry(applied, self.mesh.s.datacenter)
                try:
                    self.mesh.client().delete(f"/v1/config/{entry['Kind']}/{entry['Name']}")
                except NotFoundError:
                    pass
                except ClientError as exc:
                    raise LocalServerError(f"{key}: cannot delete the config entry: {exc}") from exc
            del state["objects"][key]
            self.save(state)
            self.out(f'{shown} "{name}" deleted')
        self.sync_dns(state)
        return found

    def delete_pod(self, name: str) -> None:
        state = self.load()
        if name not in state["pods"] and self.mesh.record(name) is None:
            raise ManifestError(f'pods "{name}" not found')
        self._remove_pod(name, state)
        self.out(f'pod "{name}" deleted')
        self.sync_dns(state)
