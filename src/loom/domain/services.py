"""Service registrations: Consul's JSON in, canonical instance and check documents out.

``agent_registration`` takes the body of ``PUT /v1/agent/service/register`` (including
``Connect.SidecarService``, which becomes a second ``connect-proxy`` instance exactly as Consul
makes it) and ``catalog_registration`` the body of ``PUT /v1/catalog/register``. Both validate
everything first and return documents ready to store; nothing is half-applied.

Stored instance documents use Consul's AgentService field names, plus ``Node``. The
``Proxy`` block of a sidecar or a mesh gateway is parsed by ``loom.domain.proxies``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from loom.domain.checks import ALIAS as ALIAS_KIND
from loom.domain.checks import TCP as TCP_KIND
from loom.domain.checks import TTL, CheckDefinition, check_type, parse_definition
from loom.domain.fields import (
    Fields,
    ValidationError,
    check_address,
    check_id,
    check_lenient_name,
    check_name,
    check_namespace,
    parse_duration,
    refuse_in_mesh,
)
from loom.domain.proxies import gateway_proxy, parse_proxy
from loom.domain.records import CONNECT_PROXY as CONNECT_PROXY
from loom.domain.records import MESH_GATEWAY as MESH_GATEWAY
from loom.domain.records import (
    Check,
    Instance,
    Node,
    Proxy,
    TaggedAddress,
    Weights,
)

Doc = dict[str, Any]


KINDS = ("", CONNECT_PROXY, MESH_GATEWAY)
CHECK_STATUSES = ("passing", "warning", "critical")
SIDECAR_PORT_RANGE = (21000, 21255)
DEFAULT_NAMESPACE = "default"


@dataclass
class Registration:
    """What one registration request writes: instances and their checks."""

    instances: list[Instance] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)


def instance_key(node: str, namespace: str, service_id: str) -> str:
    return f"{node}/{namespace}/{service_id}"


def check_key(node: str, namespace: str, check_id_: str) -> str:
    return f"{node}/{namespace}/{check_id_}"


RESERVED_META_PREFIX = "consul-"
"""Service meta keys Consul keeps for itself: an agent registration may not use them."""


def _tagged(f: Fields) -> dict[str, TaggedAddress]:
    out: dict[str, TaggedAddress] = {}
    for tag, value in f.any_map("TaggedAddresses").items():
        sub = Fields(value, f.where(f"TaggedAddresses.{tag}"))
        out[tag] = TaggedAddress(
            check_address(sub.text("Address", required=True), sub.where("Address")),
            sub.port("Port"),
        )
    return out


def _service(f: Fields, node: str, datacenter: str, namespace: str) -> Instance:
    name = check_lenient_name(
        f.text("Name", f.text("Service"), required=not f.has("Service")), f.where("Name")
    )
    sid = check_id(f.text("ID", name) or name, f.where("ID"))
    kind = f.one_of("Kind", KINDS)
    ns = check_namespace(f.text("Namespace", namespace) or namespace, f.where("Namespace"))
    weights = Weights()
    wf = f.sub("Weights")
    if wf:
        weights = Weights(wf.integer("Passing", 1, 1), wf.integer("Warning", 1, 0))
    proxy_f = f.sub("Proxy")
    proxy = None
    if kind == MESH_GATEWAY:
        proxy = gateway_proxy(f, proxy_f)
    elif kind == CONNECT_PROXY:
        if proxy_f is None:
            raise ValidationError(f"{f.where('Proxy')}: is required for a connect-proxy")
        proxy = parse_proxy(proxy_f)
        if not proxy.destination_service_name:
            raise ValidationError(f"{proxy_f.where('DestinationServiceName')}: is required")
        dest, where = proxy.destination_service_name, proxy_f.where("DestinationServiceName")
        refuse_in_mesh(check_lenient_name(dest, where), "a sidecar's destination", where)
        if not proxy.destination_service_id:
            proxy = replace(proxy, destination_service_id=proxy.destination_service_name)
    elif proxy_f is not None:
        raise ValidationError(
            f"{f.where('Proxy')}: only a connect-proxy or a mesh-gateway has a Proxy block"
        )
    if kind in (CONNECT_PROXY, MESH_GATEWAY) and not f.port("Port"):
        raise ValidationError(f"{f.where('Port')}: Port or SocketPath must be set for a {kind}")
    connect = f.sub("Connect")
    meshed = connect is not None and (connect.flag("Native") or connect.has("SidecarService"))
    use = f"a {kind}" if kind else "a Connect service" if meshed else ""
    refuse_in_mesh(name, use, f.where("Name"))
    return Instance(
        node=node,
        datacenter=datacenter,
        id=sid,
        service=name,
        kind=kind,
        namespace=ns,
        address=check_address(f.text("Address"), f.where("Address")),
        port=f.port("Port"),
        tags=tuple(f.strs("Tags")),
        meta=f.str_map("Meta"),
        tagged_addresses=_tagged(f),
        enable_tag_override=f.flag("EnableTagOverride"),
        weights=weights,
        connect_native=connect.flag("Native") if connect is not None else False,
        proxy=proxy,
    )


def _checks(
    f: Fields, service: Instance | None, node: str, scripts: bool = False, catalog: bool = False
) -> list[Check]:
    """The ``Check``/``Checks`` of a registration. Agent registrations are validated by
    Consul's check type rules and are run by Loom (``managed``); the catalog's are stored as
    given (Consul's catalog does not run checks), their definition in ``Definition``."""
    given: list[Fields] = []
    if f.sub("Check") is not None:
        given.append(Fields(f.raw("Check"), f.where("Check")))
    given.extend(f.subs("Checks"))
    out = []
    for n, c in enumerate(given, 1):
        if catalog:
            d = c.sub("Definition")
            definition = parse_definition(d, scripts=True, lenient=True) if d else None
        else:
            definition = parse_definition(c, scripts)
        ttl = c.text("TTL")
        if ttl:
            parse_duration(ttl, c.where("TTL"))
        if definition is not None and definition.kind == TTL:
            definition = None  # TTL checks keep their earlier form (``ttl``)
        if service is not None:
            default_id = f"service:{service.id}" + (f":{n}" if len(given) > 1 else "")
        else:
            default_id = c.text("Name", required=True)
        cid = c.text("CheckID", c.text("ID", default_id)) or default_id
        out.append(
            Check(
                node=node,
                check_id=cid,
                name=c.text("Name", f"Service '{service.service}' check" if service else cid),
                status=c.one_of("Status", ("", *CHECK_STATUSES)) or "critical",
                notes=c.text("Notes"),
                output=c.text("Output"),
                service_id=service.id if service else c.text("ServiceID"),
                service_name=service.service if service else "",
                namespace=service.namespace if service else DEFAULT_NAMESPACE,
                type=check_type(definition, ttl),
                ttl=ttl,
                definition=definition,
                managed=definition is not None and not catalog,
            )
        )
    return out


def _no_port(_service_id: str) -> int:
    return 0


def sidecar_port(
    parent: Instance, sidecar_id: str, used_ports: Collection[int], held: Callable[[str], int]
) -> int:
    """The port for an auto-assigned sidecar, chosen as Consul's agent does.

    A sidecar already registered with a port in the range keeps it; otherwise the lowest
    port of the range that no local service (``used_ports``, and ``parent`` itself) has.
    """
    lo, hi = SIDECAR_PORT_RANGE
    current = held(sidecar_id)
    if lo <= current <= hi:
        return current
    for port in range(lo, hi + 1):
        if port != parent.port and port not in used_ports:
            return port
    raise ValidationError(f"no free sidecar port in {lo}..{hi} on node {parent.node!r}")


def _sidecar(
    parent: Instance,
    f: Fields,
    used_ports: Collection[int],
    held: Callable[[str], int],
    scripts: bool = False,
) -> tuple[Instance, list[Check]]:
    """Consul's sidecar expansion of ``Connect.SidecarService`` for ``parent``."""
    sidecar_id = check_id(f.text("ID", f"{parent.id}-sidecar-proxy"), f.where("ID"))
    port = f.port("Port")
    if port == 0:
        try:
            port = sidecar_port(parent, sidecar_id, used_ports, held)
        except ValidationError as exc:
            raise ValidationError(f"{f.where('Port')}: {exc}") from exc
    proxy_f = f.sub("Proxy") or Fields({}, f.where("Proxy"))
    side = replace(
        parent,
        id=sidecar_id,
        service=check_name(f.text("Name", f"{parent.service}-sidecar-proxy"), f.where("Name")),
        kind=CONNECT_PROXY,
        port=port,
        address=check_address(f.text("Address", parent.address), f.where("Address")),
        tags=tuple(f.strs("Tags")) if f.has("Tags") else parent.tags,
        meta=f.str_map("Meta") if f.has("Meta") else dict(parent.meta),
        tagged_addresses={},
        connect_native=False,
        proxy=parse_proxy(
            proxy_f,
            Proxy(
                destination_service_name=parent.service,
                destination_service_id=parent.id,
                local_service_address="127.0.0.1",
                local_service_port=parent.port,
            ),
        ),
    )
    checks = _checks(f, side, parent.node, scripts)
    if not checks:
        checks = sidecar_default_checks(side, parent)
    return side, checks


LISTENING_CHECK = "Connect Sidecar Listening"
ALIASING_CHECK = "Connect Sidecar Aliasing"


def sidecar_default_checks(side: Instance, parent: Instance) -> list[Check]:
    """Consul's checks of a sidecar registered without any: the proxy's public port accepts
    connections (TCP every 10 s), and the sidecar is as healthy as its destination (alias).
    Both start critical, as every Consul check does; the sidecar's dataplane runs them."""
    address = side.address or "127.0.0.1"
    target = f"[{address}]:{side.port}" if ":" in address else f"{address}:{side.port}"
    listening = CheckDefinition(TCP_KIND, tcp=target, interval_s=10.0, timeout_s=10.0)
    aliasing = CheckDefinition(ALIAS_KIND, alias_service=parent.id)
    return [
        Check(
            node=side.node,
            check_id=f"service:{side.id}:{n}",
            name=name,
            status="critical",
            service_id=side.id,
            service_name=side.service,
            namespace=side.namespace,
            type=d.kind,
            definition=d,
            managed=True,
        )
        for n, (name, d) in enumerate(
            ((LISTENING_CHECK, listening), (f"{ALIASING_CHECK} {parent.id}", aliasing)), 1
        )
    ]


def agent_registration(
    body: Any,
    node: str,
    datacenter: str,
    used_ports: Collection[int] = (),
    held: Callable[[str], int] = _no_port,
    scripts: bool = False,
) -> Registration:
    """Validate an agent service registration; returns the instance(s) and checks to write.

    ``used_ports`` are the ports of the node's local services, which an auto-assigned sidecar
    port avoids; ``held(id)`` is the port the node's instance ``id`` has now (0: none), so a
    re-registered sidecar keeps its port. ``scripts``: script checks are allowed
    (``--enable-script-checks``).
    """
    f = Fields(body, "")
    service = _service(f, node, datacenter, DEFAULT_NAMESPACE)
    reg = Registration([service], _checks(f, service, node, scripts))
    connect = f.sub("Connect")
    sidecar = connect.sub("SidecarService") if connect else None
    if sidecar is not None:
        if service.kind == MESH_GATEWAY:  # Consul's words
            raise ValidationError(
                f"Connect.SidecarService: A {MESH_GATEWAY} cannot have a sidecar service defined"
            )
        if service.kind == CONNECT_PROXY:
            raise ValidationError("Connect.SidecarService: a connect-proxy cannot have a sidecar")
        side, side_checks = _sidecar(service, sidecar, used_ports, held, scripts)
        reg.instances.append(side)
        reg.checks.extend(side_checks)
    for inst in reg.instances:
        for key in inst.meta:
            if key.startswith(RESERVED_META_PREFIX):
                where = "Meta" if inst is service else "Connect.SidecarService.Meta"
                raise ValidationError(
                    f"{where}: Key prefix '{RESERVED_META_PREFIX}' is reserved for internal use"
                )
    return reg


def catalog_registration(body: Any, datacenter: str) -> tuple[Node, Registration]:
    """Validate a catalog registration; returns the node and what to write."""
    f = Fields(body, "")
    node_name = f.text("Node", required=True)
    check_id(node_name, "Node")
    node = Node(
        node=node_name,
        id=f.text("ID"),
        address=check_address(f.text("Address", required=True), "Address"),
        datacenter=datacenter,
        tagged_addresses=f.str_map("TaggedAddresses"),
        meta=f.str_map("NodeMeta"),
    )
    reg = Registration()
    svc_f = f.sub("Service")
    service = None
    if svc_f is not None:
        service = _service(svc_f, node_name, datacenter, DEFAULT_NAMESPACE)
        reg.instances.append(service)
    reg.checks = [
        replace(c, service_name="") if c.service_id and service is None else c
        for c in _checks(f, service, node_name, catalog=True)
    ]
    return node, reg
