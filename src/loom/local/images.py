"""Images to local programs, and a container's command line and environment (pure).

Containers of ``loom local apply`` run on the host's filesystem, so an image stands for a
program of this machine: ``ImageMap`` holds the built-ins of the seeds' images
(``hashicorp/http-echo`` -> Loom's http-echo, which keeps ``-text="hello world"``'s quotes as
the real image does; ``curlimages/curl`` and ``tutum/curl`` -> curl; ``nginx`` -> nginx in the
foreground) and what ``--image-map IMAGE=COMMAND`` and a mapping file add. Names match without
tag, digest, ``docker.io/`` or ``library/``. A container's argv follows Kubernetes: ``command``
replaces the image's entrypoint, ``args`` its default arguments. Its environment resolves
``env`` (values, the downward API's pod fields, ConfigMap and Secret keys) and ``envFrom``.
Which programs are installed is the caller's question (``required``).
"""

from __future__ import annotations

import base64
import binascii
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.local.errors import ManifestError


@dataclass(frozen=True)
class ImageProgram:
    """What an image runs here."""

    entrypoint: tuple[str, ...]
    """The image's ENTRYPOINT as a host command line (``command`` replaces it)."""
    default_args: tuple[str, ...] = ()
    """The image's CMD (``args`` replaces it)."""
    required: str | None = None
    """A host program the mapping needs; an image whose program is missing is refused."""


def _loom(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "loom", *args)


BUILTIN_IMAGES: Mapping[str, ImageProgram] = {
    "hashicorp/http-echo": ImageProgram(_loom("http-echo", "--keep-quotes")),
    "curlimages/curl": ImageProgram(("curl",), ("--help",), required="curl"),
    "tutum/curl": ImageProgram(("curl",), ("--help",), required="curl"),
    "nginx": ImageProgram(("nginx",), ("-g", "daemon off;"), required="nginx"),
}
"""The seeds' images."""


def image_name(image: str) -> str:
    """``docker.io/library/nginx:1.25@sha256:..`` -> ``nginx``."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(prefix)
    return name.removeprefix("library/")


@dataclass(frozen=True)
class ImageMap:
    """Image name -> program; the user's entries win over the built-ins."""

    entries: Mapping[str, ImageProgram] = field(default_factory=lambda: dict(BUILTIN_IMAGES))

    def with_entries(self, items: Mapping[str, str | Sequence[str]], where: str) -> ImageMap:
        """More entries, ``IMAGE -> COMMAND`` (a shell-quoted string or an argv list)."""
        out = dict(self.entries)
        for image, command in items.items():
            argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
            if not argv:
                raise ManifestError(f"{where}: image {image}: the command is empty")
            out[image_name(image)] = ImageProgram(tuple(argv))
        return ImageMap(out)

    def lookup(self, image: str) -> ImageProgram | None:
        return self.entries.get(image_name(image)) or self.entries.get(image)


def parse_image_flags(pairs: Sequence[str]) -> dict[str, str]:
    """``--image-map IMAGE=COMMAND`` flags."""
    out = {}
    for pair in pairs:
        image, sep, command = pair.partition("=")
        if not sep or not image.strip() or not command.strip():
            raise ManifestError(f"--image-map {pair!r}: expected IMAGE=COMMAND")
        out[image.strip()] = command
    return out


def container_argv(container: Mapping[str, Any], program: ImageProgram) -> list[str]:
    """Kubernetes' rule: ``command`` replaces the entrypoint, ``args`` the default args."""
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if command:
        return command + args
    return [*program.entrypoint, *(args or program.default_args)]


@dataclass(frozen=True)
class PodContext:
    """What a container's environment may refer to."""

    pod_name: str
    namespace: str
    pod_ip: str
    service_account: str
    config_maps: Mapping[str, Mapping[str, str]]
    """ConfigMap name -> its ``data``."""
    secrets: Mapping[str, Mapping[str, str]]
    """Secret name -> its decoded ``data`` and ``stringData``."""


def secret_data(body: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's values: ``data`` base64-decoded, ``stringData`` as it is."""
    out = {}
    for key, value in (body.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(str(value), validate=True).decode(errors="replace")
        except (binascii.Error, ValueError) as exc:
            name = body["metadata"]["name"]
            raise ManifestError(f"Secret/{name}: data.{key}: not base64") from exc
    out.update({k: str(v) for k, v in (body.get("stringData") or {}).items()})
    return out


def container_env(container: Mapping[str, Any], ctx: PodContext) -> dict[str, str]:
    """The container's variables; a reference that cannot be resolved is a ``ManifestError``."""
    where = f"pod {ctx.pod_name} container {container.get('name')}"
    env: dict[str, str] = {"HOSTNAME": ctx.pod_name}
    for item in container.get("envFrom") or []:
        prefix = str(item.get("prefix") or "")
        for ref, table in (("configMapRef", ctx.config_maps), ("secretRef", ctx.secrets)):
            if ref in item:
                name = item[ref].get("name")
                if name not in table:
                    if item[ref].get("optional"):
                        continue
                    raise ManifestError(f"{where}: envFrom {ref} {name}: no such object")
                env.update({prefix + k: v for k, v in table[name].items()})
    for item in container.get("env") or []:
        name = item.get("name")
        if not isinstance(name, str):
            raise ManifestError(f"{where}: env: every variable needs a name")
        if "valueFrom" not in item:
            env[name] = str(item.get("value", ""))
            continue
        value = _value_from(item["valueFrom"], ctx, f"{where}: env {name}")
        if value is not None:
            env[name] = value
    return env


def _value_from(source: Mapping[str, Any], ctx: PodContext, where: str) -> str | None:
    if "fieldRef" in source:
        path = source["fieldRef"].get("fieldPath")
        fields = {
            "metadata.name": ctx.pod_name,
            "metadata.namespace": ctx.namespace,
            "status.podIP": ctx.pod_ip,
            "spec.serviceAccountName": ctx.service_account,
            "spec.nodeName": "loom-local",
            "status.hostIP": ctx.pod_ip,
        }
        if path not in fields:
            raise ManifestError(f"{where}: fieldRef {path} is not one loom local provides")
        return fields[path]
    for ref, table in (("configMapKeyRef", ctx.config_maps), ("secretKeyRef", ctx.secrets)):
        if ref in source:
            name, key = source[ref].get("name"), source[ref].get("key")
            value = (table.get(name) or {}).get(key)
            if value is None and not source[ref].get("optional"):
                raise ManifestError(f"{where}: {ref} {name}/{key}: no such key")
            return value
    raise ManifestError(f"{where}: valueFrom: loom local takes fieldRef, configMapKeyRef, "
                        "secretKeyRef")  # fmt: skip
