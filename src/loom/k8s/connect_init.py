"""``loom k8s connect-init``: the init container that waits for the pod's registration.

It asks the server's agent API (``GET /v1/agent/services``, as a blocking query) until the
pod's service instance — ``Meta["pod-name"]`` and ``Meta["k8s-namespace"]`` equal to the pod's,
and for multi-port pods the ``--service-name`` — and its sidecar (``Kind: connect-proxy`` with
``Proxy.DestinationServiceID`` naming the instance) are registered, logging a line every few
seconds while it waits. It then writes the proxy ID into the shared volume (``proxyid``, or
``proxyid-<service>`` for multi-port pods, plus ``identity[-<service>].json``) and, with
transparent proxy, installs the traffic redirection it was given in-process
(``loom.redirect.apply_redirect``: the same ``RedirectConfig`` the planner emitted, parsed back
from its command line by ``RedirectConfig.from_flags``). After ``--timeout`` seconds it exits
non-zero saying what it was still waiting for.

``find_registration`` is the pure matching; ``run`` is the I/O around it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from loom.inject.registration import META_K8S_NAMESPACE, META_POD_NAME
from loom.inject.volumes import proxy_id_file
from loom.k8s.errors import ConnectInitError
from loom.redirect import ApplyResult, RedirectConfig, RedirectError, apply_redirect

CONNECT_PROXY = "connect-proxy"


@dataclass(frozen=True)
class ConnectInitConfig:
    """What connect-init waits for and where it writes (flags and downward-API env)."""

    http_addr: str
    """``HOST:PORT`` (or URL) of the server's HTTP API."""
    pod_name: str
    """This pod's name (``POD_NAME``)."""
    pod_namespace: str
    """This pod's Kubernetes namespace (``POD_NAMESPACE``)."""
    output_dir: Path
    """The shared volume the sidecar reads the proxy ID from."""
    service_name: str | None = None
    """For multi-port pods: which of the pod's services this init container is for."""
    consul_namespace: str | None = None
    """Consul namespace the services are registered in (when namespaces are on)."""
    timeout: float = 120.0
    """Seconds to wait for the registration before failing."""
    log_interval: float = 5.0
    """Seconds between "still waiting" log lines."""
    poll_interval: float = 1.0
    """Seconds between queries when the server does not support blocking queries."""
    redirect: RedirectConfig | None = None
    """The traffic redirection to install (the arguments after ``--``); None: none."""
    redirect_netns: str | None = None
    """Named network namespace (``ip netns``) to install it in; None: this process's own, the
    pod's. Tests and debugging only."""
    skip_redirect: bool = False
    """Do not install the redirection even when one is given (tests, dry runs)."""


@dataclass(frozen=True)
class Found:
    """The registered instance and its sidecar."""

    service_id: str
    service_name: str
    proxy_id: str
    namespace: str | None


def find_registration(
    services: Mapping[str, Any],
    pod_name: str,
    pod_namespace: str,
    service_name: str | None = None,
    consul_namespace: str | None = None,
) -> tuple[Found | None, str]:
    """The pod's instance and sidecar among ``/v1/agent/services``, else None and what is
    missing. Several services for one pod without ``service_name`` is an error."""
    own = []
    for doc in services.values():
        if not isinstance(doc, Mapping) or doc.get("Kind") == CONNECT_PROXY:
            continue
        meta = doc.get("Meta") or {}
        if meta.get(META_POD_NAME) != pod_name or meta.get(META_K8S_NAMESPACE) != pod_namespace:
            continue
        if service_name is not None and doc.get("Service") != service_name:
            continue
        if consul_namespace is not None and doc.get("Namespace", consul_namespace) != (
            consul_namespace
        ):
            continue
        own.append(doc)
    what = f"service {service_name!r} of pod" if service_name else "the service of pod"
    if not own:
        return None, f"{what} {pod_namespace}/{pod_name} is not registered yet"
    if len(own) > 1:
        names = ", ".join(sorted(str(d.get("Service")) for d in own))
        raise ConnectInitError(
            f"pod {pod_namespace}/{pod_name} has several services registered ({names}): "
            "a multi-port pod's init containers need --service-name"
        )
    instance = own[0]
    for doc in services.values():
        if (
            isinstance(doc, Mapping)
            and doc.get("Kind") == CONNECT_PROXY
            and (doc.get("Proxy") or {}).get("DestinationServiceID") == instance["ID"]
            and doc.get("Namespace") == instance.get("Namespace")
        ):
            found = Found(
                str(instance["ID"]),
                str(instance.get("Service")),
                str(doc["ID"]),
                instance.get("Namespace"),
            )
            return found, f"registered: service {found.service_id}, proxy {found.proxy_id}"
    return None, f"service {instance['ID']} is registered but its sidecar proxy is not yet"


def write_identity(config: ConnectInitConfig, found: Found) -> list[Path]:
    """Write the proxy ID (and identity JSON) atomically into the output directory."""
    suffix = f"-{config.service_name}" if config.service_name else ""
    identity = {
        "ProxyID": found.proxy_id,
        "ServiceID": found.service_id,
        "ServiceName": found.service_name,
        "Namespace": found.namespace,
        "PodName": config.pod_name,
        "PodNamespace": config.pod_namespace,
    }
    files = {
        proxy_id_file(suffix): found.proxy_id,
        f"identity{suffix}.json": json.dumps(identity, sort_keys=True, indent=2) + "\n",
    }
    written = []
    try:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = config.output_dir / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
            written.append(path)
    except OSError as exc:
        raise ConnectInitError(f"cannot write to {config.output_dir}: {exc.strerror}") from None
    return written


def base_url(http_addr: str) -> str:
    """``127.0.0.1:8500`` -> ``http://127.0.0.1:8500``."""
    return http_addr if "://" in http_addr else f"http://{http_addr}"


async def wait_for_registration(config: ConnectInitConfig, log: Callable[[str], None]) -> Found:
    """Poll (blocking queries) until found; ``ConnectInitError`` after the timeout."""
    started = time.monotonic()
    deadline = started + config.timeout
    next_log = started
    index = "0"
    status = "no answer from the server yet"
    url = f"{base_url(config.http_addr)}/v1/agent/services"
    async with aiohttp.ClientSession() as session:
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ConnectInitError(
                    f"timed out after {config.timeout:g}s waiting for the registration of pod "
                    f"{config.pod_namespace}/{config.pod_name}: {status}"
                )
            if now >= next_log:
                log(f"waiting ({now - started:.0f}s of {config.timeout:g}s): {status}")
                next_log = now + config.log_interval
            wait = max(0.05, min(deadline, next_log) - now)
            params = {"index": index, "wait": f"{int(wait * 1000)}ms"}
            if config.consul_namespace is not None:
                params["ns"] = config.consul_namespace
            asked = time.monotonic()
            try:
                async with session.get(
                    url, params=params, timeout=aiohttp.ClientTimeout(total=wait + 5)
                ) as resp:
                    if resp.status != 200:
                        status = f"server answered HTTP {resp.status}: {(await resp.text())[:200]}"
                        new_index = None
                    else:
                        found, status = find_registration(
                            await resp.json(),
                            config.pod_name,
                            config.pod_namespace,
                            config.service_name,
                            config.consul_namespace,
                        )
                        if found is not None:
                            return found
                        new_index = resp.headers.get("X-Consul-Index")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                status = f"server {config.http_addr} unreachable: {exc or type(exc).__name__}"
                new_index = None
            if new_index is None or new_index == index:
                # No blocking query happened (error, or an index that did not move): pace it.
                elapsed = time.monotonic() - asked
                await asyncio.sleep(max(0.0, min(config.poll_interval - elapsed, deadline - now)))
            index = new_index or index


async def redirect_traffic(config: RedirectConfig, netns: str | None = None) -> ApplyResult:
    """Install ``config``'s rules in-process (iptables-restore runs in a worker thread, off the
    event loop); a failure is a ``ConnectInitError``."""
    try:
        return await asyncio.to_thread(apply_redirect, config, netns)
    except RedirectError as exc:
        raise ConnectInitError(f"redirect-traffic failed: {exc}") from exc


async def run(config: ConnectInitConfig, log: Callable[[str], None]) -> Found:
    """The whole init container: wait, write, redirect."""
    found = await wait_for_registration(config, log)
    log(f"service {found.service_id} and proxy {found.proxy_id} are registered")
    for path in write_identity(config, found):
        log(f"wrote {path}")
    if config.redirect is not None and not config.skip_redirect:
        result = await redirect_traffic(config.redirect, config.redirect_netns)
        log("traffic redirection installed: " + " ".join(config.redirect.to_flags()))
        log(result.summary())
    elif config.redirect is not None:
        log("skipping traffic redirection (--skip-redirect)")
    return found
