"""The mesh gateway pod of one datacenter of ``loom local`` (``Kind: mesh-gateway``).

When the local mesh is one datacenter of several, each datacenter runs one mesh gateway: a
pod named ``mesh-gateway`` on its node network (its LAN address) with a second interface on
the WAN (``wan.py``; its WAN address), registered as Consul registers one (``Kind:
mesh-gateway``, ``TaggedAddresses`` ``lan`` and ``wan``, port 8443, Envoy bound to both
tagged addresses), and run by ``loom dataplane`` as the pod's own UID, as every sidecar
here. With ACLs on it logs in as the service account ``mesh-gateway``: the service identity
the binding rule gives it writes its own registration and reads the catalog, what a Consul
mesh gateway's token holds. The pod is an ordinary pod of the mesh's records, so ``ps``,
``rm mesh-gateway`` and ``down`` handle it; its teardown also takes it off the WAN.
"""

from __future__ import annotations

from typing import Any

from loom.api.client import ClientError
from loom.local import uids
from loom.local.errors import LocalError, LocalServerError
from loom.local.mesh import LocalMesh
from loom.local.workload import resolv_conf

GATEWAY = "mesh-gateway"
"""The gateway's pod name, service name, service ID and service account."""
GATEWAY_PORT = 8443
"""Its port on both addresses (Consul's default for mesh gateways)."""


def registration(datacenter: str, lan: str, wan: str, port: int = GATEWAY_PORT) -> dict[str, Any]:
    """The agent registration of ``datacenter``'s gateway: LAN and WAN tagged addresses."""
    return {
        "Kind": "mesh-gateway",
        "ID": GATEWAY,
        "Name": GATEWAY,
        "Address": lan,
        "Port": port,
        "Meta": {"datacenter": datacenter},
        "TaggedAddresses": {
            "lan": {"Address": lan, "Port": port},
            "wan": {"Address": wan, "Port": port},
        },
        # Envoy listens on both tagged addresses (each is on its own interface), not on the
        # service address alone: Consul's options for a gateway with a LAN and a WAN side.
        "Proxy": {
            "Config": {
                "envoy_gateway_no_default_bind": True,
                "envoy_gateway_bind_tagged_addresses": True,
            }
        },
    }


def gateway_record(mesh: LocalMesh) -> dict[str, Any] | None:
    """The gateway pod's record when it runs (every process alive), else None."""
    from loom.local import processes

    rec = mesh.record(GATEWAY)
    if rec is None or not rec.get("wan") or not rec.get("sidecars"):
        return None
    return rec if all(processes.alive(sc["pid"]) for sc in rec["sidecars"]) else None


def gateway_up(mesh: LocalMesh) -> dict[str, Any]:
    """Run ``mesh``'s gateway (once): pod, WAN interface, registration, login, dataplane
    (ready). All or nothing: a failure removes what this call made."""
    from loom.local import wan

    mesh.up()
    if mesh.s.wan is None:
        raise LocalError(f"datacenter {mesh.s.datacenter} has no WAN to put a gateway on")
    running = gateway_record(mesh)
    if running is not None:
        return running
    if mesh.record(GATEWAY) is not None or mesh.pods.get_pod(GATEWAY) is not None:
        mesh.rm(GATEWAY)  # a half-made or stopped one
    rec: dict[str, Any] = {
        "name": GATEWAY, "kind": "mesh-gateway", "services": [], "sidecars": [], "app": None,
        "tokens": {}, "containers": [], "uid": None, "wan": None,
    }  # fmt: skip
    rec["uid"] = uids.claim(mesh.s.pods_dir, GATEWAY, mesh.s.sidecar_uids, True,
                            lambda uid: mesh.save({**rec, "uid": uid}))  # fmt: skip
    try:
        info = mesh.pods.add_pod(GATEWAY, resolv_conf("127.0.0.1"))
        rec.update(netns=info.netns, ip=info.ip)
        mesh.save(rec)
        rec["wan"] = {"ip": wan.attach(mesh.s.wan, mesh.s.datacenter, mesh.s.wan_index,
                                       info.netns)}  # fmt: skip
        mesh.save(rec)
        mesh.say(f"mesh gateway of {mesh.s.datacenter}: LAN {info.ip}, WAN {rec['wan']['ip']}")
        body = registration(mesh.s.datacenter, info.ip, rec["wan"]["ip"])
        try:
            mesh.client().put("/v1/agent/service/register", body)
        except ClientError as exc:
            raise LocalServerError(f"cannot register the mesh gateway: {exc}") from exc
        rec["services"].append(GATEWAY)
        mesh.save(rec)
        if mesh.acls_on():
            mesh.login(rec, GATEWAY, GATEWAY, GATEWAY)
        mesh.start_sidecar(rec, GATEWAY, dns=False)
        return rec
    except BaseException:
        mesh.say(f"mesh gateway of {mesh.s.datacenter}: failed; removing what was made")
        mesh.teardown(rec)
        raise


def gateway_down(mesh: LocalMesh) -> bool:
    """Remove ``mesh``'s gateway; False when there was none."""
    if mesh.record(GATEWAY) is None and mesh.pods.get_pod(GATEWAY) is None:
        return False
    mesh.rm(GATEWAY)
    return True
