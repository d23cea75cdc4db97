"""``loom k8s controller``: watch Kubernetes, keep the catalog's pod registrations current.

Three informers (list, then watch from the list's ``resourceVersion`` with bookmarks, so the
version stays fresh while nothing changes) keep Pods, Services and Namespaces in memory. A watch
the API server expires (410 Gone: "too old resource version") is relisted at once; other
failures are retried with backoff that starts over once a list succeeds, so a resource kind is
never left unwatched longer than one short wait after a good list. Every event, debounced, and a
periodic resync run ``loom.k8s.controller.reconcile`` against the controller's registrations in
``GET /v1/agent/services`` and apply the result with ``PUT /v1/agent/service/register`` and
``/deregister``; when pods log in, a gone pod's login tokens are deleted too. Nothing is written
before all three informers have listed once, so a restart never deregisters pods it has not seen
yet. An unreachable API server or Loom server is one log line per failure, retried with
exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError, NotReadyError
from lightkube.resources.core_v1 import Namespace, Pod, Service

from loom.api import AsyncClient as LoomClient
from loom.api import ClientError, NotFoundError, TlsSettings
from loom.inject import InjectSettings
from loom.inject.registration import META_K8S_NAMESPACE
from loom.k8s.controller import Changes, login_tokens_of, owners, reconcile
from loom.k8s.errors import K8sError

log = logging.getLogger("loom.k8s.controller")

Doc = dict[str, Any]
ALL_NAMESPACES = "*"
FIRST_BACKOFF_S = 0.5
"""First wait after a failure; doubled per failure in a row, up to ``max_backoff``."""
GONE = 410
"""The API server's answer to a watch from a version it no longer keeps."""
API_TIMEOUT_S = 10.0
"""Longest wait for one answer of the Loom server's agent API."""


class ControllerError(K8sError):
    """The controller cannot start (kubeconfig) or the Loom server's answer is unusable.

    (The Loom server being unreachable or refusing a write is the API client's ``ClientError``.)
    """


@dataclass(frozen=True)
class ControllerConfig:
    """Where the controller reads from and writes to, and how often."""

    http_addr: str
    """The Loom server's HTTP API: ``HOST:PORT``, ``unix:PATH`` or an ``http(s)://`` URL."""
    kubeconfig: str | None = None
    """Kubeconfig file; None: in-cluster service account, else ``~/.kube/config``."""
    namespace: str | None = None
    """Only this Kubernetes namespace; None: all namespaces."""
    debounce: float = 0.1
    """Seconds to wait after an event for more before reconciling."""
    resync: float = 60.0
    """Seconds between reconciles when nothing happens."""
    max_backoff: float = 30.0
    """Longest wait between retries of an unreachable API server or Loom server."""
    tls: TlsSettings | None = None
    """How an ``https://`` Loom server is verified (``--ca-file``...); None: the environment."""


class Informer:
    """An in-memory copy of one resource kind, kept by list + watch."""

    def __init__(
        self, client: AsyncClient, kind: Any, namespace: str | None, notify: Callable[[], None]
    ) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.notify = notify
        self.objects: dict[tuple[str, str], Doc] = {}
        self.synced = asyncio.Event()
        self.name = kind.__name__.lower() + "s"
        self.phase = "list"
        self.listed = False
        """The current attempt's list succeeded (a later failure is the watch's)."""

    def _key(self, obj: Doc) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    async def run(self, max_backoff: float) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            self.listed = False
            try:
                await self._list_and_watch()
                backoff = FIRST_BACKOFF_S
            except ApiError as exc:
                if exc.status.code != GONE:
                    backoff = await self._retry(exc, backoff, max_backoff)
                    continue
                log.info("kubernetes API: watch of %s expired (%s); listing again",
                         self.name, exc.status.message or "too old resource version")  # fmt: skip
                backoff = FIRST_BACKOFF_S
            except Exception as exc:  # any failure: an informer that died would stall the loop
                backoff = await self._retry(exc, backoff, max_backoff)

    async def _retry(self, exc: BaseException, backoff: float, max_backoff: float) -> float:
        """Log a failure, wait, and return the next wait: the first one again when the list
        succeeded before the failure (only the watch broke), doubled otherwise."""
        if self.listed:
            backoff = FIRST_BACKOFF_S
        log.error(
            "kubernetes API: %s %s failed: %s; retrying in %.1fs",
            self.phase,
            self.name,
            _one_line(exc),
            backoff,
        )
        await asyncio.sleep(backoff)
        return min(backoff * 2, max_backoff)

    async def _list_and_watch(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.kind is not Namespace:
            kwargs["namespace"] = self.namespace or ALL_NAMESPACES
        self.phase = "list"
        listing = self.client.list(self.kind, **kwargs)
        fresh = {}
        async for obj in listing:
            doc = obj.to_dict()
            fresh[self._key(doc)] = doc
        try:
            version: str | None = listing.resourceVersion
        except NotReadyError:
            version = None
        self.objects = fresh
        if not self.synced.is_set():
            log.info("kubernetes API: listed %d %s", len(fresh), self.name)
        self.synced.set()
        self.listed = True
        self.notify()
        self.phase = "watch"
        async for event, obj in self._watch(version, kwargs):
            if event == "BOOKMARK":
                continue  # only moves the version the watch resumes from
            doc = obj.to_dict()
            if event == "DELETED":
                self.objects.pop(self._key(doc), None)
            else:
                self.objects[self._key(doc)] = doc
            log.debug("kubernetes API: %s %s %s", event, self.name, "/".join(self._key(doc)))
            self.notify()


    def _watch(self, version: str | None, kwargs: dict[str, Any]) -> Any:
        """The watch stream from ``version``, asking for bookmarks (lightkube's ``watch``
        has no parameter for ``allowWatchBookmarks``, so the request is prepared here with
        its generic client; it resumes from each event's, bookmarks' included, version)."""
        generic = self.client._client
        request = generic.prepare_request(
            "list",
            res=self.kind,
            namespace=kwargs.get("namespace"),
            watch=True,
            params={"resourceVersion": version, "allowWatchBookmarks": "true"},
        )
        return generic.watch(request)


async def run_informed(
    informers: Sequence[Informer], max_backoff: float, loop: Callable[[], Awaitable[None]]
) -> None:
    """Run ``informers`` and, once each has listed, ``loop``; stop them when ``loop`` ends.
    Nothing is reconciled before every kind is known (a restart never removes what it has
    not seen yet)."""
    tasks = [asyncio.create_task(i.run(max_backoff)) for i in informers]
    try:
        for informer in informers:
            await informer.synced.wait()
        await loop()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Controller:
    """The reconcile loop: informers in, agent API writes out."""

    def __init__(self, config: ControllerConfig, settings: InjectSettings, client: Any) -> None:
        self.config = config
        self.settings = settings
        self.changed = asyncio.Event()
        ns = config.namespace
        self.pods = Informer(client, Pod, ns, self.changed.set)
        self.services = Informer(client, Service, ns, self.changed.set)
        self.namespaces = Informer(client, Namespace, None, self.changed.set)
        self.api = LoomClient(config.http_addr, timeout=API_TIMEOUT_S, tls=config.tls)
        self._skipped: dict[str, str] = {}

    async def run(self) -> None:
        informers = (self.pods, self.services, self.namespaces)
        await run_informed(informers, self.config.max_backoff, self._loop)

    async def _loop(self) -> None:
        backoff = 0.5
        while True:
            try:
                await asyncio.wait_for(self.changed.wait(), self.config.resync)
                await asyncio.sleep(self.config.debounce)
            except TimeoutError:
                pass
            self.changed.clear()
            try:
                changes = await self.sync()
                backoff = 0.5
            except (ClientError, ControllerError) as exc:
                log.error(
                    "loom server %s: %s; retrying in %.1fs",
                    self.config.http_addr,
                    _one_line(exc),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.max_backoff)
                self.changed.set()
                continue
            if not changes.empty:
                log.info(
                    "registered %d, deregistered %d service(s)",
                    len(changes.register),
                    len(changes.deregister),
                )

    async def sync(self) -> Changes:
        """One reconcile: read the catalog, compute, write."""
        registered = await self.api.get("/v1/agent/services")
        if not isinstance(registered, dict):
            raise ControllerError("GET /v1/agent/services: the answer is not a JSON object")
        docs = [d for d in registered.values() if isinstance(d, dict)]
        if self.config.namespace is not None:
            docs = [
                d
                for d in docs
                if (d.get("Meta") or {}).get(META_K8S_NAMESPACE) == self.config.namespace
            ]
        labels = {
            name: dict((doc.get("metadata") or {}).get("labels") or {})
            for (_, name), doc in self.namespaces.objects.items()
        }
        changes = reconcile(
            list(self.pods.objects.values()),
            list(self.services.objects.values()),
            docs,
            self.settings,
            labels,
        )
        self._report_skipped(changes)
        namespaces = {str(d["ID"]): d.get("Namespace") for d in docs}
        # Gone pods first: a new pod may have been given a deleted pod's IP, and its sidecar
        # (same address, same port) is refused while the stale one is still registered.
        for sid in changes.deregister:
            ns = namespaces.get(sid)
            params = {"ns": ns} if ns and ns != "default" else {}
            await self.api.put(f"/v1/agent/service/deregister/{sid}", **params)
            log.info("deregistered %s (its pod is gone)", sid)
        if changes.deregister and self.settings.login.auth_method is not None:
            await self._logout(owners(docs, changes.deregister), self.settings.login.auth_method)
        for body in changes.register:
            await self.api.put("/v1/agent/service/register", body)
            log.info("registered %s at %s", body["ID"], body["Address"])
        return changes

    async def _logout(self, pods: set[str], method: str) -> None:
        """Delete the login tokens of pods that are gone (the controller's token needs
        ``acl:write``, as consul-k8s's connect-injector's has)."""
        tokens = await self.api.get("/v1/acl/tokens", authmethod=method)
        if not isinstance(tokens, list):
            raise ControllerError("GET /v1/acl/tokens: the answer is not a JSON list")
        for accessor in login_tokens_of([t for t in tokens if isinstance(t, dict)], method, pods):
            with contextlib.suppress(NotFoundError):  # logged out meanwhile
                await self.api.delete(f"/v1/acl/token/{accessor}")
            log.info("deleted login token %s (its pod is gone)", accessor)

    def _report_skipped(self, changes: Changes) -> None:
        now = {s.pod: s.reason for s in changes.skipped}
        for pod, reason in now.items():
            if self._skipped.get(pod) != reason:
                log.warning("pod %s skipped: %s", pod, reason)
        self._skipped = now


def kube_client(kubeconfig: str | None) -> AsyncClient:
    """A lightkube client from the kubeconfig file, or from the environment."""
    try:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        return AsyncClient(config=config)
    except (ConfigError, OSError, ValueError) as exc:
        where = kubeconfig or "the environment (in-cluster or ~/.kube/config)"
        raise ControllerError(f"cannot load a kubeconfig from {where}: {_one_line(exc)}") from None


async def run(config: ControllerConfig, settings: InjectSettings) -> None:
    """Run the controller until cancelled."""
    client = kube_client(config.kubeconfig)
    scope = f"namespace {config.namespace}" if config.namespace else "all namespaces"
    log.info("watching pods and services in %s; registering with %s", scope, config.http_addr)
    await Controller(config, settings, client).run()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
