"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does.

So the controller can run with two replicas: only the holder of the Lease runs the
controllers; the standby retries every ``retry_period`` and takes the Lease over once its
holder has not renewed it for ``lease_duration`` (measured, as client-go does, on the
candidate's own clock from when it last saw the record change, so clock skew between pods does
not matter). The holder renews every ``retry_period``; when it cannot renew within
``renew_deadline`` it stops its controllers and ``run`` raises ``LeadershipLost`` (the process
exits and is restarted as a candidate, client-go's usual ``OnStoppedLeading``). A holder that
stops cleanly (SIGTERM) releases the Lease, so the standby takes over at its next retry.

Every update is a compare-and-swap on the Lease's ``resourceVersion`` (a 409 means another
candidate won the race). Defaults are client-go's: 15 s, 10 s, 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource

from loom.k8s.errors import K8sError

log = logging.getLogger("loom.k8s.leader")

Lease = create_namespaced_resource("coordination.k8s.io", "v1", "Lease", "leases")


class LeadershipLost(K8sError):
    """The Lease could not be renewed within the renew deadline; the controllers stopped."""


@dataclass(frozen=True)
class ElectionConfig:
    """Which Lease, who is asking, and the timings (client-go's defaults)."""

    name: str
    """The Lease's name (``loom install``: ``<global.name>-controller-leader``)."""
    namespace: str
    """The Lease's namespace (the controller's own)."""
    identity: str
    """This candidate's ``holderIdentity`` (pod name and a random suffix)."""
    lease_duration: float = 15.0
    """Seconds a standby waits, after the last renewal it saw, before taking over."""
    renew_deadline: float = 10.0
    """Seconds the holder keeps trying to renew before it gives up leading."""
    retry_period: float = 2.0
    """Seconds between attempts to acquire or renew."""


def _micro_time(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One candidate for one Lease."""

    def __init__(self, client: AsyncClient, config: ElectionConfig) -> None:
        self.client, self.config = client, config
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = 0.0
        self.leading = False

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Wait for the Lease, run ``work`` while holding it; release it when cancelled."""
        cfg = self.config
        while not await self._try():
            await asyncio.sleep(cfg.retry_period)
        self.leading = True
        log.info("became leader (lease %s/%s, identity %s)", cfg.namespace, cfg.name, cfg.identity)
        task = asyncio.create_task(work())
        try:
            last_renew = time.monotonic()
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=cfg.retry_period)
                if done:
                    break
                if await self._try():
                    last_renew = time.monotonic()
                elif time.monotonic() - last_renew > cfg.renew_deadline:
                    raise LeadershipLost(
                        f"lease {cfg.namespace}/{cfg.name}: not renewed within "
                        f"{cfg.renew_deadline:g}s; stopping the controllers"
                    )
            await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if self.leading:
                self.leading = False
                await self._release()

    async def _try(self) -> bool:
        """One acquire-or-renew attempt: True when this candidate holds the Lease now."""
        cfg = self.config
        now = datetime.datetime.now(datetime.UTC)
        try:
            found: Any = await self.client.get(Lease, cfg.name, namespace=cfg.namespace)
            lease: dict[str, Any] = found.to_dict()
        except ApiError as exc:
            if exc.status.code != 404:
                log.warning("lease %s/%s: get failed: %s", cfg.namespace, cfg.name,
                            exc.status.message)  # fmt: skip
                return False
            return await self._write(None, self._spec(now, now, 0))
        except Exception as exc:  # an unreachable API server: not leading, try again
            log.warning("lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == cfg.identity:
            acquired = spec.get("acquireTime") or _micro_time(now)
            return await self._write(lease, {**self._spec(now, now, transitions),
                                             "acquireTime": acquired})  # fmt: skip
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        if holder and time.monotonic() - self._seen_at < duration:
            return False  # held, and renewed within the lease duration as far as we saw
        log.info("lease %s/%s: taking over from %r", cfg.namespace, cfg.name, holder)
        return await self._write(lease, self._spec(now, now, transitions + 1))

    def _spec(
        self, acquired: datetime.datetime, renewed: datetime.datetime, transitions: int
    ) -> dict[str, Any]:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": round(self.config.lease_duration),
            "acquireTime": _micro_time(acquired),
            "renewTime": _micro_time(renewed),
            "leaseTransitions": transitions,
        }

    async def _write(self, lease: dict[str, Any] | None, spec: dict[str, Any]) -> bool:
        cfg = self.config
        metadata: dict[str, Any] = {"name": cfg.name, "namespace": cfg.namespace}
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
        obj = Lease.from_dict({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                               "metadata": metadata, "spec": spec})  # fmt: skip
        try:
            if lease is None:
                await self.client.create(obj)
            else:
                await self.client.replace(obj)
        except ApiError as exc:
            if exc.status.code not in (409, 422):
                log.warning("lease %s/%s: write failed: %s", cfg.namespace, cfg.name,
                            exc.status.message)  # fmt: skip
            return False
        except Exception as exc:
            log.warning("lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        return True

    async def _release(self) -> None:
        """Give the Lease up (an empty holder), so a standby need not wait for it to expire."""
        cfg = self.config
        try:
            found: Any = await self.client.get(Lease, cfg.name, namespace=cfg.namespace)
            lease: dict[str, Any] = found.to_dict()
            if (lease.get("spec") or {}).get("holderIdentity") != cfg.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            await self._write(lease, spec)
            log.info("released lease %s/%s", cfg.namespace, cfg.name)
        except Exception as exc:  # stopping anyway: the Lease expires by itself
            log.warning("lease %s/%s: release failed: %s", cfg.namespace, cfg.name, exc)
