"""ACL enforcement for the HTTP API: one middleware, one table of what each route needs.

When ACLs are on (``loom server --acl-default-policy``), every request's token is resolved
(``X-Consul-Token``, else ``Authorization: Bearer``, else ``?token=``; none is the anonymous
token; an unknown one is refused with ``ACL not found``) and checked against the permission
``NEEDS`` names for its route, as Consul's endpoints check them. A route missing from the
table needs ``acl:write`` (management), so a new endpoint is closed until someone says what
it needs. Reads of lists are filtered in their handlers with ``loom.server.acl_reads.visible``,
which marks the response ``X-Consul-Results-Filtered-By-ACLs: true`` when it left something
out. A refusal is
a ``PermissionDenied`` or ``AclNotFound``, which ``http._errors`` turns into a 403.

With ACLs off the middleware passes every request through and ``visible`` filters nothing:
behaviour is exactly that of a server without ACLs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from loom.acl.authorizer import Authorizer
from loom.acl.rules import Access
from loom.ca.csr import CheckedCsr, read_csr
from loom.control.catalog import Vet
from loom.control.configs import split_ref
from loom.control.state import State
from loom.domain.config_entries import (
    EXTERNAL_SERVICE,
    MESH,
    PROXY_DEFAULTS,
    SERVICE_DEFAULTS,
    SERVICE_INTENTIONS,
    SERVICE_RESOLVER,
    validate_entry,
)
from loom.domain.entries import ServiceResolver
from loom.domain.fields import Fields, ValidationError
from loom.domain.records import Check, Instance, Node
from loom.domain.resolver import related_services
from loom.domain.services import Registration, instance_key
from loom.server import kv_needs
from loom.server.query import namespace

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Need = tuple[str, Access, str]
Needs = Callable[[web.Request, State], Awaitable[list[Need]]]
Doc = dict[str, Any]

FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
_AUTHZ = "loom.acl.authorizer"
_SECRET = "loom.acl.secret"
_FILTERED = "loom.acl.filtered"
R, W = Access.READ, Access.WRITE


def state_of(request: web.Request) -> State:
    from loom.server.http import STATE

    return request.app[STATE]


def secret_of(request: web.Request) -> str:
    """The request's token: ``X-Consul-Token``, ``Authorization: Bearer``, ``?token=``."""
    token = request.headers.get("X-Consul-Token", "").strip()
    if not token:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    return token or request.query.get("token", "").strip()


def authorizer(request: web.Request) -> Authorizer | None:
    """The request token's authorizer; None when ACLs are off."""
    found: Authorizer | None = request.get(_AUTHZ)
    return found


# -- what each route needs -------------------------------------------------------------------


async def _nothing(request: web.Request, state: State) -> list[Need]:
    return []


def _fixed(resource: str, access: Access) -> Needs:
    async def needs(request: web.Request, state: State) -> list[Need]:
        return [(resource, access, "")]

    return needs


async def _body(request: web.Request) -> Any:
    from loom.server.http import _body as body

    return await body(request)


def registration_needs(node: Node | None, reg: Registration) -> list[Need]:
    """Consul's vetting of a registration: write on each service written (a sidecar too)
    and on a proxy's destination; write on the node of a catalog registration."""
    out: list[Need] = [("node", W, node.node)] if node is not None else []
    for inst in reg.instances:
        out.extend(instance_needs(inst))
    return out


def instance_needs(inst: Instance) -> list[Need]:
    """What writing one instance needs, in the instance's own namespace."""
    out: list[Need] = [("service", W, inst.service)]
    if inst.proxy is not None and inst.proxy.destination_service_name:
        out.append(("service", W, inst.proxy.destination_service_name))
    return out


def vetter(request: web.Request) -> Vet | None:
    """What the catalog calls with the parsed registration, inside its lock and before it
    writes (the body is parsed once, and what is checked is exactly what is written);
    None when ACLs are off."""
    authz = authorizer(request)
    if authz is None:
        return None

    def vet(node: Node | None, reg: Registration) -> None:
        # Each instance in its own namespace (the body's, which may differ from ?ns=).
        if node is not None:
            authz.check("node", W, node.node)
        for inst in reg.instances:
            scoped = authz.in_namespace(inst.namespace)
            for resource, access, name in instance_needs(inst):
                scoped.check(resource, access, name)

    return vet


def check_vetter(request: web.Request) -> Callable[[Check], None] | None:
    """Consul's rule for ``/v1/agent/check/register``: write on the check's service, or on
    the node for a node check; checked on the parsed check, inside the lock. None: ACLs off."""
    authz = authorizer(request)
    if authz is None:
        return None

    def vet(check: Check) -> None:
        scoped = authz.in_namespace(check.namespace)  # the check's own namespace
        if check.service_name:
            scoped.check("service", W, check.service_name)
        else:
            scoped.check("node", W, check.node)

    return vet


async def _agent_node_write(request: web.Request, state: State) -> list[Need]:
    return [("node", W, state.settings.node)]


async def _agent_deregister(request: web.Request, state: State) -> list[Need]:
    inst = state.catalog.find(request.match_info["id"], request.query.get("ns") or "default")
    return [("service", W, inst.service)] if inst is not None else []


async def _check_write(request: web.Request, state: State) -> list[Need]:
    from loom.store.tables import CHECKS

    keys = state.catalog.checks.by_check_id.get((state.settings.node, request.match_info["id"]))
    check = state.store.record(CHECKS, min(keys)) if keys else None
    if check is None:
        return []
    need: Need = (
        ("service", W, check.service_name) if check.service_name else ("node", W, check.node)
    )
    check_in(request, check.namespace, need)
    return []


async def _catalog_deregister(request: web.Request, state: State) -> list[Need]:
    f = Fields(await _body(request), "")
    node, ns = f.text("Node", required=True), f.text("Namespace", "default") or "default"
    if f.has("ServiceID"):
        from loom.store.tables import SERVICES

        inst = state.store.record(SERVICES, instance_key(node, ns, f.text("ServiceID")))
        if inst is not None:
            check_in(request, ns, ("service", W, inst.service))  # the body's namespace
            return []
    return [("node", W, node)]


def _named(resource: str, access: Access, key: str) -> Needs:
    async def needs(request: web.Request, state: State) -> list[Need]:
        return [(resource, access, request.match_info[key])]

    return needs


def check_in(request: web.Request, namespace: str, need: Need) -> None:
    """Check ``need`` in ``namespace`` (a wildcard namespace: the token's own), where the
    resource's namespace is named by the body or a reference rather than by ``?ns=``."""
    authz = authorizer(request)
    if authz is not None:
        authz.in_namespace("default" if namespace == "*" else namespace).check(*need)


def _destination(access: Access) -> Needs:
    async def needs(request: web.Request, state: State) -> list[Need]:
        if request.method == "POST":
            f = Fields(await _body(request), "")
            ns = f.text("DestinationNS", "default") or "default"
            name = f.text("DestinationName", required=True)
        else:
            dst = request.query.get("destination")
            if not dst:
                raise ValidationError("source and destination query parameters are required")
            ns, name = split_ref(dst, "destination")
        check_in(request, ns, ("intention", access, name))
        return []

    return needs


def _intention_by_id(access: Access) -> Needs:
    """Access to the intention's destination, and for an update to the body's too."""

    async def needs(request: web.Request, state: State) -> list[Need]:
        from loom.control.legacy_intentions import find

        found = find(state.configs, request.match_info["id"])  # a malformed ID: 400
        if found is not None:
            check_in(request, found.destination_ns, ("intention", access, found.destination))
        if request.method == "PUT":
            f = Fields(await _body(request), "")
            ns = f.text("DestinationNS", "default") or "default"
            check_in(request, ns, ("intention", access, f.text("DestinationName", required=True)))
        return []

    return needs


async def _intention_check(request: web.Request, state: State) -> list[Need]:
    dst = request.query.get("destination")
    if not dst:
        raise ValidationError("source and destination query parameters are required")
    return [("service", R, split_ref(dst, "destination")[1])]


def entry_need(kind: str, name: str, access: Access) -> Need | None:
    """What reading or writing a config entry needs (None: anyone may read it)."""
    if kind == SERVICE_INTENTIONS:
        return ("intention", access, name)
    if kind in (SERVICE_DEFAULTS, EXTERNAL_SERVICE, SERVICE_RESOLVER):
        return ("service", access, name)
    if kind in (PROXY_DEFAULTS, MESH):
        return None if access is R else ("mesh", W, "")
    return ("operator", access, "")


async def _config_write(request: web.Request, state: State) -> list[Need]:
    body = await _body(request)
    f = Fields(body, "")
    need = entry_need(f.text("Kind"), f.text("Name"), W)
    if need is not None and need[0] in ("service", "intention"):
        # The entry's own namespace (the body's; the handler writes it there), not ?ns=.
        check_in(request, f.text("Namespace", "default") or "default", need)
        need = None
    needs = [need] if need else []
    if f.text("Kind") == SERVICE_RESOLVER:
        # Consul's rule: sending your service's traffic elsewhere needs read on each target.
        try:
            entry = validate_entry(body)
        except ValidationError:
            return needs  # the handler answers 400 (nothing is written)
        if isinstance(entry, ServiceResolver):
            needs += [("service", R, name) for name in related_services(entry)]
    return needs


async def _config_named(request: web.Request, state: State) -> list[Need]:
    access = R if request.method in ("GET", "HEAD") else W
    need = entry_need(request.match_info["kind"], request.match_info["name"], access)
    return [need] if need else []


_CSR = "loom.csr"


async def csr_of(request: web.Request) -> CheckedCsr:
    """The request body's ``CSR``, read and checked once per request (``CsrError``: 400),
    all but its self-signature, which whoever signs it checks (a signing worker, when the
    server runs some: the costly verify is not done in the server's own process)."""
    found: CheckedCsr | None = request.get(_CSR)
    if found is None:
        pem = Fields(await _body(request), "").text("CSR", required=True)
        found = request[_CSR] = read_csr(pem, verify=False)
    return found


async def _csr_service(request: web.Request, state: State) -> list[Need]:
    identity = (await csr_of(request)).identity  # in the CSR's namespace, not ?ns='s
    check_in(request, identity.namespace, ("service", W, identity.service))
    return []


async def _connect_authorize(request: web.Request, state: State) -> list[Need]:
    return [("service", W, Fields(await _body(request), "").text("Target", required=True))]


NEEDS: dict[tuple[str, str], Needs] = {
    ("GET", "/v1/agent/services"): _nothing,  # filtered
    ("GET", "/v1/agent/service/{id}"): _nothing,  # checked in the handler, by the instance
    ("PUT", "/v1/agent/service/register"): _nothing,  # vetter(), on the parsed registration
    ("PUT", "/v1/agent/service/deregister/{id}"): _agent_deregister,
    ("PUT", "/v1/agent/check/pass/{id}"): _check_write,
    ("PUT", "/v1/agent/check/warn/{id}"): _check_write,
    ("PUT", "/v1/agent/check/fail/{id}"): _check_write,
    ("PUT", "/v1/agent/check/update/{id}"): _check_write,
    ("GET", "/v1/agent/checks"): _nothing,  # filtered
    ("PUT", "/v1/agent/check/register"): _nothing,  # check_vetter(), on the parsed check
    ("PUT", "/v1/agent/check/deregister/{id}"): _check_write,
    ("GET", "/v1/agent/health/service/id/{id}"): _nothing,  # checked in the handler
    ("GET", "/v1/agent/health/service/name/{name}"): _named("service", R, "name"),
    ("PUT", "/v1/agent/service/maintenance/{id}"): _agent_deregister,  # service:write
    ("PUT", "/v1/agent/maintenance"): _agent_node_write,
    ("GET", "/v1/agent/self"): _fixed("agent", R),
    ("GET", "/v1/agent/members"): _nothing,  # filtered: node:read on the member
    ("GET", "/v1/agent/version"): _nothing,  # Consul's needs no ACL
    ("GET", "/v1/agent/host"): _fixed("operator", R),
    ("GET", "/v1/agent/metrics"): _fixed("agent", R),
    ("PUT", "/v1/catalog/register"): _nothing,  # vetter(), on the parsed registration
    ("PUT", "/v1/catalog/deregister"): _catalog_deregister,
    ("GET", "/v1/catalog/services"): _nothing,  # filtered
    ("GET", "/v1/catalog/service/{name}"): _nothing,  # filtered
    ("GET", "/v1/catalog/nodes"): _nothing,  # filtered
    ("GET", "/v1/catalog/datacenters"): _nothing,
    ("GET", "/v1/catalog/node/{node}"): _nothing,  # filtered: node:read, then service:read
    ("GET", "/v1/catalog/node-services/{node}"): _nothing,  # filtered, likewise
    ("GET", "/v1/catalog/connect/{service}"): _nothing,  # filtered
    ("GET", "/v1/catalog/gateway-services/{gateway}"): _named("service", R, "gateway"),
    ("GET", "/v1/health/node/{node}"): _nothing,  # filtered
    ("GET", "/v1/health/state/{state}"): _nothing,  # filtered
    ("GET", "/v1/health/service/{name}"): _nothing,  # filtered
    ("GET", "/v1/health/connect/{name}"): _nothing,  # filtered
    ("GET", "/v1/health/checks/{name}"): _nothing,  # filtered
    ("GET", "/v1/connect/intentions/exact"): _destination(R),
    ("PUT", "/v1/connect/intentions/exact"): _destination(W),
    ("DELETE", "/v1/connect/intentions/exact"): _destination(W),
    ("GET", "/v1/connect/intentions/check"): _intention_check,
    ("GET", "/v1/connect/intentions/match"): _nothing,  # filtered
    ("GET", "/v1/connect/intentions"): _nothing,  # filtered
    ("POST", "/v1/connect/intentions"): _destination(W),
    ("GET", "/v1/connect/intentions/{id}"): _intention_by_id(R),
    ("PUT", "/v1/connect/intentions/{id}"): _intention_by_id(W),
    ("DELETE", "/v1/connect/intentions/{id}"): _intention_by_id(W),
    ("PUT", "/v1/config"): _config_write,
    ("GET", "/v1/config/{kind}"): _nothing,  # filtered
    ("GET", "/v1/config/{kind}/{name}"): _config_named,
    ("DELETE", "/v1/config/{kind}/{name}"): _config_named,
    ("GET", "/v1/connect/ca/roots"): _nothing,
    ("GET", "/v1/agent/connect/ca/roots"): _nothing,
    ("GET", "/v1/connect/ca/configuration"): _fixed("operator", R),
    ("PUT", "/v1/connect/ca/configuration"): _fixed("operator", W),
    ("GET", "/v1/agent/connect/ca/leaf/{service}"): _named("service", W, "service"),
    ("POST", "/v1/agent/connect/authorize"): _connect_authorize,
    ("PUT", "/v1/loom/connect/ca/sign"): _csr_service,
    ("PUT", "/v1/loom/dataplane/{id}/heartbeat"): _agent_deregister,  # service:write
    # A secondary datacenter's intermediate CA (its replication token): Consul's rule.
    ("POST", "/v1/internal/connect/ca/sign-intermediate"): _fixed("operator", W),
    ("GET", "/v1/loom/dns-table"): _nothing,  # filtered
    ("GET", "/v1/loom/intentions/explain"): _destination(R),  # reads its intentions
    ("GET", "/v1/loom/ui/metrics"): _nothing,  # filtered by service:read, per service
    # The web UI's static files are public (as Consul's): its data comes from the API.
    ("GET", "/"): _nothing,
    ("GET", "/ui"): _nothing,
    ("GET", "/ui/{path}"): _nothing,
    ("GET", "/v1/loom/proxies"): _fixed("operator", R),
    ("GET", "/v1/loom/proxies/{id}/config"): _fixed("operator", R),
    ("GET", "/v1/status/leader"): _nothing,
    ("GET", "/v1/status/peers"): _nothing,
    ("GET", "/v1/snapshot"): _fixed("acl", W),  # management, as Consul's snapshot endpoint
    ("PUT", "/v1/snapshot"): _fixed("acl", W),
    # The ACL API: reads need acl:read, writes acl:write; token/self only a valid token.
    ("GET", "/v1/acl/token/self"): _nothing,
    ("GET", "/v1/acl/token/{id}"): _fixed("acl", R),
    ("PUT", "/v1/acl/token"): _fixed("acl", W),
    ("PUT", "/v1/acl/token/{id}"): _fixed("acl", W),
    ("DELETE", "/v1/acl/token/{id}"): _fixed("acl", W),
    ("GET", "/v1/acl/tokens"): _fixed("acl", R),
    ("PUT", "/v1/acl/policy"): _fixed("acl", W),
    ("GET", "/v1/acl/policy/{id}"): _fixed("acl", R),
    ("GET", "/v1/acl/policy/name/{name}"): _fixed("acl", R),
    ("PUT", "/v1/acl/policy/{id}"): _fixed("acl", W),
    ("DELETE", "/v1/acl/policy/{id}"): _fixed("acl", W),
    ("GET", "/v1/acl/policies"): _fixed("acl", R),
    ("PUT", "/v1/acl/role"): _fixed("acl", W),
    ("GET", "/v1/acl/role/{id}"): _fixed("acl", R),
    ("GET", "/v1/acl/role/name/{name}"): _fixed("acl", R),
    ("PUT", "/v1/acl/role/{id}"): _fixed("acl", W),
    ("DELETE", "/v1/acl/role/{id}"): _fixed("acl", W),
    ("GET", "/v1/acl/roles"): _fixed("acl", R),
    ("PUT", "/v1/acl/auth-method"): _fixed("acl", W),
    ("GET", "/v1/acl/auth-method/{name}"): _fixed("acl", R),
    ("PUT", "/v1/acl/auth-method/{name}"): _fixed("acl", W),
    ("DELETE", "/v1/acl/auth-method/{name}"): _fixed("acl", W),
    ("GET", "/v1/acl/auth-methods"): _fixed("acl", R),
    ("PUT", "/v1/acl/binding-rule"): _fixed("acl", W),
    ("GET", "/v1/acl/binding-rule/{id}"): _fixed("acl", R),
    ("PUT", "/v1/acl/binding-rule/{id}"): _fixed("acl", W),
    ("DELETE", "/v1/acl/binding-rule/{id}"): _fixed("acl", W),
    ("GET", "/v1/acl/binding-rules"): _fixed("acl", R),
    ("GET", "/v1/acl/templated-policies"): _fixed("acl", R),
    ("GET", "/v1/acl/templated-policy/name/{name}"): _fixed("acl", R),
    ("POST", "/v1/acl/templated-policy/preview/{name}"): _fixed("acl", R),
    ("POST", "/v1/internal/acl/authorize"): _nothing,  # a valid token, asking about itself
    # KV, transactions and sessions (loom.server.kv_needs says what each checks).
    ("GET", "/v1/kv/{key}"): kv_needs.kv_read,
    ("PUT", "/v1/kv/{key}"): kv_needs.kv_write,
    ("DELETE", "/v1/kv/{key}"): kv_needs.kv_write,
    ("PUT", "/v1/txn"): _nothing,  # each op vetted by kv_http.txn, as Consul vets them
    ("PUT", "/v1/session/create"): kv_needs.session_create,
    ("PUT", "/v1/session/destroy/{id}"): kv_needs.session_of(W),
    ("PUT", "/v1/session/renew/{id}"): kv_needs.session_of(W),
    ("GET", "/v1/session/info/{id}"): kv_needs.session_of(R),
    ("GET", "/v1/session/node/{node}"): _named("session", R, "node"),
    ("GET", "/v1/session/list"): _nothing,  # filtered
    # Prepared queries: query rules are checked in loom.server.query_http on the parsed or
    # stored query (a template's name prefix, the stored name of an update), as Consul does.
    ("POST", "/v1/query"): _nothing,  # query:write on the body's name, if it has one
    ("GET", "/v1/query"): _nothing,  # filtered: query:read on each name
    ("GET", "/v1/query/{id}"): _nothing,  # query:read on its name (unnamed: management)
    ("PUT", "/v1/query/{id}"): _nothing,  # query:write on the stored and the new name
    ("DELETE", "/v1/query/{id}"): _nothing,  # query:write on the stored name
    ("GET", "/v1/query/{id}/execute"): _nothing,  # results filtered: service:read, node:read
    ("GET", "/v1/query/{id}/explain"): _nothing,  # query:read on the (template's) name
    # Another datacenter's failover (Consul's ExecuteRemote RPC): results filtered likewise.
    ("POST", "/v1/loom/query/execute-remote"): _nothing,
}
UNRESOLVED = frozenset(
    {("PUT", "/v1/acl/bootstrap"), ("POST", "/v1/acl/login"), ("POST", "/v1/acl/logout")}
)
"""Routes the middleware does not resolve a token for: bootstrap (there is no token yet),
login (the bearer token in the body is the proof; Consul ignores the request's token) and
logout (its handler looks the request's token up itself, to delete it)."""
_MANAGEMENT = _fixed("acl", W)


def route_of(request: web.Request) -> tuple[str, str] | None:
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return method, resource.canonical


@web.middleware
async def enforce(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = state_of(request)
    route = route_of(request)
    if not state.acl.enabled or route is None or route in UNRESOLVED:
        return await handler(request)
    secret = secret_of(request)
    # AclNotFound: 403 "ACL not found". Decided in the request's namespace (?ns=, the
    # X-Consul-Namespace header, else default); see Authorizer.in_namespace for why that
    # never widens access to what Loom does not keep per namespace.
    authz = state.acl.authorizer(secret).in_namespace(namespace(request))
    request[_AUTHZ] = authz
    request[_SECRET] = secret
    for resource, access, name in await NEEDS.get(route, _MANAGEMENT)(request, state):
        authz.check(resource, access, name)
    response = await handler(request)
    if request.get(_FILTERED):
        response.headers[FILTERED_HEADER] = "true"
    return response


def request_secret(request: web.Request) -> str:
    found: str = request.get(_SECRET, "")
    return found
