"""A pod's volumes on the local mesh: ConfigMap, Secret and emptyDir volumes (pure).

Containers here share the host's filesystem, so a volume is a directory under the pod's
own directory (``volumes/<name>``) holding the files Kubernetes would project (every key,
or the ``items`` chosen, with ``defaultMode``/``mode``), bind-mounted at each
``volumeMount``'s ``mountPath`` (``subPath``: one file or folder of it; ``readOnly``) in the
container's private mount namespace, the one ``ip netns exec`` makes. The host's own files
are never changed. A ``mountPath`` must exist on the host (a bind mount needs a target);
``apply`` checks that before making anything. ``mount_argv`` wraps a container's command
in those mounts (``loom local exec`` gets the same, so it sees what the container sees).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loom.local.errors import ManifestError


@dataclass(frozen=True)
class VolumeFile:
    """One projected file: ``path`` under the volume's directory."""

    path: str
    content: str
    mode: int


@dataclass(frozen=True)
class Mount:
    """One bind mount of a container: ``source`` (under the volume's directory) at
    ``target``."""

    volume: str
    source: str
    """Relative to the volume's directory (``""``: the whole volume; else the ``subPath``)."""
    target: str
    read_only: bool


def volume_files(
    spec: Mapping[str, Any],
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    where: str,
) -> dict[str, list[VolumeFile]]:
    """Volume name -> its files, for the pod's ConfigMap, Secret and emptyDir volumes."""
    out: dict[str, list[VolumeFile]] = {}
    for volume in spec.get("volumes") or []:
        name = str(volume.get("name"))
        if "emptyDir" in volume:
            out[name] = []
            continue
        for kind, key, table in (("configMap", "name", config_maps),
                                 ("secret", "secretName", secrets)):  # fmt: skip
            if kind not in volume:
                continue
            source = volume[kind] or {}
            ref = str(source.get(key))
            data = table.get(ref)
            if data is None:
                if source.get("optional"):
                    out[name] = []
                    break
                raise ManifestError(f"{where}: volume {name}: {kind} {ref} does not exist")
            mode = int(source.get("defaultMode", 0o644))
            items = source.get("items")
            if items:
                chosen = [(i["key"], i.get("path") or i["key"], int(i.get("mode", mode)))
                          for i in items]  # fmt: skip
            else:
                chosen = [(k, k, mode) for k in sorted(data)]
            files = []
            for item_key, path, item_mode in chosen:
                if item_key not in data:
                    raise ManifestError(f"{where}: volume {name}: {kind} {ref} has no key "
                                        f"{item_key}")  # fmt: skip
                if path.startswith("/") or ".." in path.split("/"):
                    raise ManifestError(f"{where}: volume {name}: item path {path} leaves it")
                files.append(VolumeFile(path, data[item_key], item_mode))
            out[name] = files
            break
    return out


def container_mounts(
    container: Mapping[str, Any], volumes: Mapping[str, list[VolumeFile]], where: str
) -> list[Mount]:
    """The mounts of one app container (volumes of other types are refused)."""
    out = []
    for m in container.get("volumeMounts") or []:
        name, target = m.get("name"), m.get("mountPath")
        if not isinstance(target, str) or not target.startswith("/"):
            raise ManifestError(f"{where}: volumeMount {name}: mountPath must be absolute")
        if name not in volumes:
            raise ManifestError(
                f"{where}: volumeMount {name}: loom local mounts configMap, secret and "
                "emptyDir volumes of the pod"
            )
        sub = str(m.get("subPath") or "")
        if sub.startswith("/") or ".." in sub.split("/"):
            raise ManifestError(f"{where}: volumeMount {name}: subPath {sub} leaves the volume")
        out.append(Mount(str(name), sub, target, bool(m.get("readOnly"))))
    return out


MOUNT_SCRIPT = (
    'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 126; '
    'if [ "$3" = ro ]; then mount -o remount,bind,ro "$2" || exit 126; fi; shift 3; done; '
    'shift; exec "$@"'
)
"""Bind mounts (source, target, ro|rw triples) then the command; run by ``sh`` as root."""


def mount_argv(mounts: Sequence[tuple[str, str, bool]], argv: Sequence[str]) -> list[str]:
    """``argv`` run after the bind mounts ``(source, target, read_only)``; as is without."""
    if not mounts:
        return list(argv)
    triples = [x for s, t, ro in mounts for x in (s, t, "ro" if ro else "rw")]
    return ["sh", "-c", MOUNT_SCRIPT, "loom-mounts", *triples, "--", *argv]
