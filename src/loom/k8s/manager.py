"""``loom k8s controller``'s process: the endpoints and config-entry controllers, one leader.

The endpoints controller (``controller_loop``) and, with ``crds``, the config-entry controller
(``crd_controller``) share one Kubernetes client and one Loom API client and run side by side;
with leader election (``leader``) they run only while this replica holds the Lease, so two
replicas never write at once and the standby takes over within the lease duration.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from loom.inject import InjectSettings
from loom.k8s.controller_loop import Controller, ControllerConfig, kube_client
from loom.k8s.crd_controller import CrdController
from loom.k8s.leader import ElectionConfig, LeaderElector

log = logging.getLogger("loom.k8s.controller")


@dataclass(frozen=True)
class ManagerConfig:
    """What runs in the controller process besides the endpoints controller."""

    crds: bool = False
    """Also sync consul.hashicorp.com resources to config entries."""
    datacenter: str = "dc1"
    """``global.datacenter``: marked on the entries the resources make."""
    election: ElectionConfig | None = None
    """Leader election on this Lease; None: always run (one replica)."""


async def run(config: ControllerConfig, settings: InjectSettings, manager: ManagerConfig) -> None:
    """Run the controllers (as leader, with an election) until cancelled."""
    client = kube_client(config.kubeconfig)
    scope = f"namespace {config.namespace}" if config.namespace else "all namespaces"

    async def controllers() -> None:
        endpoints = Controller(config, settings, client)
        what = "pods and services" + (" and config-entry resources" if manager.crds else "")
        log.info("watching %s in %s; registering with %s", what, scope, config.http_addr)
        async with asyncio.TaskGroup() as group:
            group.create_task(endpoints.run())
            if manager.crds:
                crds = CrdController(
                    client, endpoints.api, settings, manager.datacenter, config.namespace,
                    config.resync, config.max_backoff,
                )  # fmt: skip
                group.create_task(crds.run())

    async def elected() -> None:
        if manager.election is None:
            await controllers()
        else:
            await LeaderElector(client, manager.election).run(controllers)

    # SIGTERM (a pod being stopped) ends the controllers cleanly: a leader releases its Lease.
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(elected())
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await task
    except asyncio.CancelledError:
        if not stopping:
            raise
        log.info("stopped")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
