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

With ``--acl-auth-method`` it first logs in with the pod's service-account token
(``loom.api.login``), makes its own calls with the token it got, checks that token may write
the pod's service and leaves it in the shared volume for the sidecar (``--acl-token-sink``).

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

from loom.api import AsyncClient, ClientError, HTTPStatusError, TlsSettings, WatchPolicy
from loom.api.login import (
    LoggedIn,
    LoginSettings,
    check_service_write,
    login,
    logout,
    write_token,
)
from loom.inject.registration import META_K8S_NAMESPACE, META_POD_NAME
from loom.inject.volumes import proxy_id_file
from loom.k8s.errors import ConnectInitError
from loom.redirect import RedirectConfig, RedirectError
from loom.redirect.applying import ApplyResult, apply_redirect

CONNECT_PROXY = "connect-proxy"
AGENT_SERVICES = "/v1/agent/services"


@dataclass(frozen=True)
class ConnectInitConfig:
    """What connect-init waits for and where it writes (flags and downward-API env)."""

    http_addr: str
    """The server's HTTP API: ``HOST:PORT``, ``unix:PATH`` or an ``http(s)://`` URL."""
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
    """Seconds between queries while the server does not answer (or answers an error)."""
    tls: TlsSettings | None = None
    """How an ``https://`` server is verified (``--ca-file``...); None: the environment."""
    redirect: RedirectConfig | None = None
    """The traffic redirection to install (the arguments after ``--``); None: none."""
    redirect_netns: str | None = None
    """Named network namespace (``ip netns``) to install it in; None: this process's own, the
    pod's. Tests and debugging only."""
    skip_redirect: bool = False
    """Do not install the redirection even when one is given (tests, dry runs)."""
    login: LoginSettings | None = None
    """Log in through an ACL auth method first (``--acl-auth-method``); None: use the token
    the environment gives (``LOOM_HTTP_TOKEN``...), if any."""


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


async def wait_for_registration(
    config: ConnectInitConfig, log: Callable[[str], None], token: str | None = None
) -> Found:
    """Follow ``/v1/agent/services`` (blocking queries) until found; ``ConnectInitError`` after
    the timeout, saying what was still missing. A "waiting" line every ``log_interval``.
    ``token``: the login token (None: the environment's)."""
    started = time.monotonic()
    status = "no answer from the server yet"
    client = AsyncClient(config.http_addr, token=token, tls=config.tls)

    def failed(exc: ClientError, _retry_in: float) -> None:
        nonlocal status
        if isinstance(exc, HTTPStatusError):
            status = f"server answered {exc.reason}"
        else:
            status = f"server {config.http_addr} unreachable: {exc.reason}"

    async def follow() -> Found:
        nonlocal status
        params = {"ns": config.consul_namespace} if config.consul_namespace is not None else None
        # A server that is not up yet is asked again every poll_interval, not after a backoff.
        policy = WatchPolicy(backoff_min=config.poll_interval, backoff_max=config.poll_interval)
        answers = client.watch(AGENT_SERVICES, params=params, policy=policy, on_error=failed)
        async for services, _ in answers:
            if not isinstance(services, Mapping):
                status = "the server's answer is not a JSON object"
                continue
            found, status = find_registration(
                services,
                config.pod_name,
                config.pod_namespace,
                config.service_name,
                config.consul_namespace,
            )
            if found is not None:
                return found
        raise ConnectInitError("the watch of the registrations ended")  # it never does

    async def report() -> None:
        while True:
            log(f"waiting ({time.monotonic() - started:.0f}s of {config.timeout:g}s): {status}")
            await asyncio.sleep(config.log_interval)

    reporter = asyncio.create_task(report())
    try:
        async with asyncio.timeout(config.timeout):
            return await follow()
    except TimeoutError:
        raise ConnectInitError(
            f"timed out after {config.timeout:g}s waiting for the registration of pod "
            f"{config.pod_namespace}/{config.pod_name}: {status}"
        ) from None
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)


async def redirect_traffic(config: RedirectConfig, netns: str | None = None) -> ApplyResult:
    """Install ``config``'s rules in-process (iptables-restore runs in a worker thread, off the
    event loop); a failure is a ``ConnectInitError``."""
    try:
        return await asyncio.to_thread(apply_redirect, config, netns)
    except RedirectError as exc:
        raise ConnectInitError(f"redirect-traffic failed: {exc}") from exc


async def _logged_in(config: ConnectInitConfig, log: Callable[[str], None]) -> LoggedIn | None:
    if config.login is None:
        return None
    pod = f"{config.pod_namespace}/{config.pod_name}"
    deadline = time.monotonic() + config.timeout
    token = await login(config.http_addr, config.login, pod, deadline, log, tls=config.tls)
    log(
        f"logged in through auth method {config.login.auth_method!r}: token "
        f"{token.accessor_id} for {', '.join(token.identities) or 'no service identity'}"
    )
    return token


async def run(config: ConnectInitConfig, log: Callable[[str], None]) -> Found:
    """The whole init container: log in, wait, check, write, redirect."""
    token = await _logged_in(config, log)
    try:
        found = await wait_for_registration(config, log, token.secret_id if token else None)
        if token is not None and config.login is not None:
            await check_service_write(
                config.http_addr, token, config.login, found.service_name, tls=config.tls
            )
    except BaseException:
        if token is not None:
            await logout(config.http_addr, token, tls=config.tls)
        raise
    log(f"service {found.service_id} and proxy {found.proxy_id} are registered")
    for path in write_identity(config, found):
        log(f"wrote {path}")
    if token is not None and config.login is not None:
        log(f"wrote the ACL token to {write_token(config.login, token)}")
    if config.redirect is not None and not config.skip_redirect:
        result = await redirect_traffic(config.redirect, config.redirect_netns)
        log("traffic redirection installed: " + " ".join(config.redirect.to_flags()))
        log(result.summary())
    elif config.redirect is not None:
        log("skipping traffic redirection (--skip-redirect)")
    return found
