"""Several datacenters of ``loom local`` made into one federation.

``loom local up --datacenter dc2 --primary-datacenter dc1`` makes dc2 a secondary of dc1: its
server starts with ``--primary-datacenter dc1 --join-wan <dc1's HTTP API on loopback>`` and
dc1's management token (ACLs are federated; that token is also its replication token), both
datacenters get their mesh gateway (``gateway.py``) on the shared WAN, and proxy-defaults
``MeshGateway.Mode = local`` is written in both, so a sidecar's traffic to another
datacenter leaves through its own datacenter's gateway. What a datacenter was made with is
kept in its state directory (``federation.json``), so its later commands (``run`` starting
its server again, ``gateway up``) make the same server.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from loom.api.client import ClientError, NotFoundError
from loom.local.errors import LocalServerError, state_io
from loom.local.gateway import gateway_up
from loom.local.mesh import LocalMesh
from loom.local.settings import LocalSettings

MESH_GATEWAY_MODE = "local"
"""proxy-defaults ``MeshGateway.Mode`` of a local federation: out through the local gateway."""
_VOLATILE = ("CreateIndex", "ModifyIndex", "Hash")


def _record_file(s: LocalSettings) -> Path:
    return s.net.state_dir / "federation.json"


def recorded(s: LocalSettings) -> LocalSettings:
    """``s`` with the federation its datacenter was brought up with (if any)."""
    try:
        data = json.loads(_record_file(s).read_text())
    except (OSError, ValueError):
        return s
    source = data.get("management_token_source")
    return dataclasses.replace(
        s,
        primary_datacenter=str(data.get("primary_datacenter", "")),
        join_wan=tuple(data.get("join_wan", ())),
        management_token_source=Path(source) if source else None,
    )


def _record(s: LocalSettings) -> None:
    data = {
        "datacenter": s.datacenter,
        "primary_datacenter": s.primary_datacenter,
        "join_wan": list(s.join_wan),
        "management_token_source": str(s.management_token_source or ""),
    }
    with state_io(f"cannot record the federation of {s.datacenter}"):
        s.net.state_dir.mkdir(parents=True, exist_ok=True)
        _record_file(s).write_text(json.dumps(data, indent=1) + "\n")


def secondary_settings(
    secondary: LocalSettings, primary: LocalSettings, primary_acls: bool
) -> LocalSettings:
    """``secondary`` as a secondary datacenter of ``primary``: joined to its server, with
    its management token when the primary has ACLs on (and ACLs off when it has not)."""
    return dataclasses.replace(
        secondary,
        primary_datacenter=primary.datacenter,
        join_wan=(primary.http_addr,),
        management_token_source=primary.token_file if primary_acls else None,
        acl_default_policy=secondary.acl_default_policy if primary_acls else None,
    )


def set_mesh_gateway_mode(mesh: LocalMesh, mode: str = MESH_GATEWAY_MODE) -> None:
    """proxy-defaults ``global`` gets ``MeshGateway.Mode = mode``; its other fields stay."""
    client = mesh.client()
    try:
        try:
            entry = dict(client.get("/v1/config/proxy-defaults/global"))
        except NotFoundError:
            entry = {"Kind": "proxy-defaults", "Name": "global"}
        for key in _VOLATILE:
            entry.pop(key, None)
        if (entry.get("MeshGateway") or {}).get("Mode") == mode:
            return
        entry["MeshGateway"] = {"Mode": mode}
        client.put("/v1/config", entry)
    except ClientError as exc:
        raise LocalServerError(
            f"datacenter {mesh.s.datacenter}: cannot set proxy-defaults MeshGateway.Mode: {exc}"
        ) from exc
    mesh.say(f"datacenter {mesh.s.datacenter}: proxy-defaults MeshGateway.Mode = {mode}")


def federate(primary: LocalMesh, secondary: LocalMesh) -> None:
    """Bring ``primary`` up (if it is not), then ``secondary`` as its secondary, a mesh
    gateway in each, and the mesh gateway mode in both. ``secondary.s`` is replaced by its
    federated settings (recorded in its state directory)."""
    primary.up()
    secondary.s = secondary_settings(secondary.s, primary.s, primary.acls_on())
    _record(secondary.s)
    secondary.up()
    for mesh in (primary, secondary):
        gateway_up(mesh)
    for mesh in (primary, secondary):
        set_mesh_gateway_mode(mesh)
