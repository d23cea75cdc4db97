"""The config-entry controller: consul-k8s's custom resources kept in sync with Loom's entries.

One informer per kind (ServiceDefaults, ProxyDefaults, ServiceIntentions, Mesh; the same
list + watch as the endpoints controller's, 410s relisted at once) and, on every change
(debounced) and every resync, each resource is reconciled:

- a resource without consul-k8s's finalizer gets it first, so its entry outlives it never;
- its entry (``loom.domain.crds.to_config_entry``) is written with ``PUT /v1/config`` unless
  the stored entry was made by something else (by hand, or by another resource: ``may_write``),
  which is never overwritten;
- its ``status`` gets the ``Synced`` condition: ``True``, or ``False`` with the reason
  (``ConsulAgentError`` and the server's own message, ``ExternalConfigEntry``,
  ``InvalidResource``), written only when it changes;
- a resource being deleted has its entry deleted (when it made it), then its finalizer removed.

An entry is written again when the resource changes, when the entry is gone, and after a
restart (writes are idempotent). The Loom server unreachable is one log line per pass and
the pass is retried with backoff; a write the server refuses is the resource's condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from loom.api import AsyncClient as LoomClient
from loom.api import ClientError, NotFoundError
from loom.api.errors import HTTPStatusError
from loom.domain.crds import (
    CRD_KINDS,
    FINALIZER,
    GROUP,
    REASON_AGENT_ERROR,
    REASON_EXTERNAL,
    REASON_INVALID,
    VERSION,
    CrdError,
    entry_path,
    may_write,
    owner_of,
    resource_id,
    same_status,
    synced_status,
    to_config_entry,
)
from loom.inject import InjectSettings
from loom.k8s.controller_loop import Informer, run_informed

log = logging.getLogger("loom.k8s.crds")

Doc = dict[str, Any]

RESOURCES = {
    k.kind: create_namespaced_resource(GROUP, VERSION, k.kind, k.plural) for k in CRD_KINDS.values()
}
"""lightkube classes of the four kinds."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CrdController:
    """Informers over the four kinds, and the reconcile of each resource."""

    def __init__(
        self,
        client: AsyncClient,
        api: LoomClient,
        settings: InjectSettings,
        datacenter: str,
        namespace: str | None = None,
        resync: float = 60.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.client, self.api, self.settings = client, api, settings
        self.datacenter, self.resync, self.max_backoff = datacenter, resync, max_backoff
        self.changed = asyncio.Event()
        self.informers: dict[str, Informer] = {}
        for kind, res in RESOURCES.items():
            informer = Informer(client, res, namespace, self.changed.set)
            informer.name = CRD_KINDS[kind].plural
            self.informers[kind] = informer
        self.written: dict[str, str] = {}
        """Resource uid -> the entry last written for it (JSON), to skip unchanged writes."""

    async def run(self) -> None:
        await run_informed(list(self.informers.values()), self.max_backoff, self._loop)

    async def _loop(self) -> None:
        backoff = 0.5
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.resync)
                await asyncio.sleep(0.1)  # debounce: one pass for a burst of events
            self.changed.clear()
            try:
                await self.sync_all()
                backoff = 0.5
            except ClientError as exc:
                log.error("loom server: %s; retrying in %.1fs", exc.reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                self.changed.set()

    async def sync_all(self) -> None:
        """Reconcile every resource once."""
        for kind, informer in self.informers.items():
            for doc in list(informer.objects.values()):
                try:
                    await self.sync(kind, doc)
                except ApiError as exc:
                    if exc.status.code in (404, 409):  # gone or changed meanwhile: next event
                        continue
                    log.error("kubernetes API: %s: %s", resource_id(doc), exc.status.message)

    async def sync(self, kind: str, doc: Doc) -> None:
        """Reconcile one resource (see the module docstring)."""
        res = RESOURCES[kind]
        meta = doc["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if FINALIZER in finalizers:
                await self._delete_entry(doc)
                rest = [f for f in finalizers if f != FINALIZER]
                await self._patch_meta(res, doc, {"finalizers": rest or None})
                self.written.pop(str(meta.get("uid")), None)
            return
        if FINALIZER not in finalizers:
            await self._patch_meta(res, doc, {"finalizers": [*finalizers, FINALIZER]})
        ok, reason, message = await self._write_entry(doc)
        status = synced_status(doc.get("status"), ok, reason, message, _now())
        if not same_status(doc.get("status"), status):
            await self.client.patch(
                res.Status, meta["name"], {"status": status},
                namespace=meta["namespace"], patch_type=PatchType.MERGE,
            )  # fmt: skip
            if ok:
                log.info("%s synced", resource_id(doc))
            else:
                log.warning("%s not synced: %s: %s", resource_id(doc), reason, message)

    async def _write_entry(self, doc: Doc) -> tuple[bool, str, str]:
        """Write the resource's entry: (synced, reason, message)."""
        try:
            entry = to_config_entry(doc, self.datacenter, self._consul_namespace(doc))
        except CrdError as exc:
            return False, REASON_INVALID, str(exc)
        current = await self._current(entry)
        why = may_write(current, doc, self.datacenter)
        if why is not None:
            return False, REASON_EXTERNAL, why
        uid = str(doc["metadata"].get("uid"))
        text = json.dumps(entry, sort_keys=True)
        if current is None or self.written.get(uid) != text:
            try:
                await self.api.put("/v1/config", entry)
            except HTTPStatusError as exc:
                self.written.pop(uid, None)
                return False, REASON_AGENT_ERROR, str(exc)
            self.written[uid] = text
            log.info("wrote config entry %s/%s for %s", entry["Kind"], entry["Name"],
                     resource_id(doc))  # fmt: skip
        return True, "", ""

    async def _delete_entry(self, doc: Doc) -> None:
        try:
            entry = to_config_entry(doc, self.datacenter, self._consul_namespace(doc))
        except CrdError:
            return  # it never made an entry
        current = await self._current(entry)
        if current is None or owner_of(current) != resource_id(doc):
            return  # never fight an entry it did not make
        path, params = entry_path(entry)
        with contextlib.suppress(NotFoundError):
            await self.api.delete(path, **params)
        log.info("deleted config entry %s/%s (%s deleted)", entry["Kind"], entry["Name"],
                 resource_id(doc))  # fmt: skip

    async def _current(self, entry: Doc) -> Doc | None:
        path, params = entry_path(entry)
        try:
            found = await self.api.get(path, **params)
        except NotFoundError:
            return None
        if not isinstance(found, dict):
            raise ClientError(f"GET {path}: the answer is not a JSON object")
        return found

    async def _patch_meta(self, res: Any, doc: Doc, changes: dict[str, Any]) -> None:
        meta = doc["metadata"]
        # resourceVersion makes it a compare-and-swap: a 409 waits for the next event.
        body = {"metadata": {**changes, "resourceVersion": meta.get("resourceVersion")}}
        await self.client.patch(
            res, meta["name"], body, namespace=meta["namespace"], patch_type=PatchType.MERGE
        )

    def _consul_namespace(self, doc: Doc) -> str | None:
        return self.settings.namespaces.consul_namespace(str(doc["metadata"]["namespace"]))
