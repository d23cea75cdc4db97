"""The ``/v1/acl/*`` endpoints: bootstrap, tokens, policies, roles, auth methods, binding
rules, templated policies, login and logout, in Consul's shapes.

Paths, bodies and answers follow Consul's ACL HTTP API so py-consul and the Consul CLI work:
a write answers with the record as stored (IDs chosen, links filled with both ID and Name,
``CreateIndex``/``ModifyIndex``), a delete with ``true``, a list with every record (policy
lists without their rules, as Consul's stubs). A token's SecretID is shown only to a token
with ``acl:write`` (``<hidden>`` otherwise, as Consul redacts it). What each route needs is in
``guard.NEEDS``; with ACLs off every route answers 401 ``ACL support disabled``.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from loom.acl.rules import SEGMENTED, SINGLE, Access
from loom.acl.stored import Stored
from loom.acl.templated import TEMPLATES, Template, synthetic_doc, variable_problem
from loom.acl.wire import Fields as AclFields
from loom.domain.fields import ValidationError
from loom.server import guard
from loom.store.tables import ACL_TABLES

Doc = dict[str, Any]
HIDDEN = "<hidden>"


def _json(request: web.Request, data: Any) -> web.Response:
    from loom.server.http import _json as as_json

    return as_json(data, guard.state_of(request).store.table_index(ACL_TABLES))


async def _body(request: web.Request) -> Any:
    from loom.server.http import _body as body

    return await body(request)


def _enabled(request: web.Request) -> None:
    if not guard.state_of(request).acl.enabled:
        raise web.HTTPUnauthorized(text="ACL support disabled\n")


def _token(request: web.Request, stored: Stored[Any]) -> Doc:
    doc = stored.to_json()
    authz = guard.authorizer(request)
    if authz is not None and not authz.acl_write() and request.path != "/v1/acl/token/self":
        doc["SecretID"] = HIDDEN
    return doc


async def bootstrap(request: web.Request) -> web.Response:
    _enabled(request)
    f = AclFields("Bootstrap", await _body(request))
    secret = f.text("BootstrapSecret")
    f.done()
    stored = await guard.state_of(request).acl.bootstrap(secret)
    return _json(request, stored.to_json())


# -- tokens ------------------------------------------------------------------------------------


async def token_self(request: web.Request) -> web.Response:
    _enabled(request)
    acl = guard.state_of(request).acl
    token = acl.token(guard.request_secret(request))
    return _json(request, _token(request, acl.get_token(token.accessor_id)))


async def token_read(request: web.Request) -> web.Response:
    _enabled(request)
    stored = guard.state_of(request).acl.get_token(request.match_info["id"])
    return _json(request, _token(request, stored))


async def token_create(request: web.Request) -> web.Response:
    _enabled(request)
    stored = await guard.state_of(request).acl.create_token(await _body(request))
    return _json(request, stored.to_json())


async def token_update(request: web.Request) -> web.Response:
    _enabled(request)
    acl = guard.state_of(request).acl
    stored = await acl.update_token(request.match_info["id"], await _body(request))
    return _json(request, stored.to_json())


async def token_delete(request: web.Request) -> web.Response:
    _enabled(request)
    acl = guard.state_of(request).acl
    await acl.delete_token(request.match_info["id"], guard.request_secret(request))
    return _json(request, True)


async def token_list(request: web.Request) -> web.Response:
    _enabled(request)
    tokens = guard.state_of(request).acl.tokens()
    policy = request.query.get("policy")
    if policy:
        tokens = [t for t in tokens if any(p.id == policy for p in t.record.policies)]
    role = request.query.get("role")
    if role:
        tokens = [t for t in tokens if any(r.id == role for r in t.record.roles)]
    method = request.query.get("authmethod")
    if method:
        tokens = [t for t in tokens if t.record.auth_method == method]
    return _json(request, [_token(request, t) for t in tokens])


# -- policies ------------------------------------------------------------------------------------


def _stub(stored: Stored[Any]) -> Doc:
    doc = stored.to_json()
    doc.pop("Rules", None)
    return doc


async def policy_write(request: web.Request) -> web.Response:
    _enabled(request)
    acl = guard.state_of(request).acl
    stored = await acl.write_policy(await _body(request), request.match_info.get("id", ""))
    return _json(request, stored.to_json())


async def policy_read(request: web.Request) -> web.Response:
    _enabled(request)
    acl = guard.state_of(request).acl
    stored = acl.get_policy(request.match_info.get("id", ""), request.match_info.get("name", ""))
    return _json(request, stored.to_json())


async def policy_delete(request: web.Request) -> web.Response:
    _enabled(request)
    await guard.state_of(request).acl.delete_policy(request.match_info["id"])
    return _json(request, True)


async def policy_list(request: web.Request) -> web.Response:
    _enabled(request)
    return _json(request, [_stub(p) for p in guard.state_of(request).acl.policies()])


# -- roles -----------------------------------------------------------------------------------------


async def role_write(request: web.Request) -> web.Response:
    _enabled(request)
    acl = guard.state_of(request).acl
    stored = await acl.write_role(await _body(request), request.match_info.get("id", ""))
    return _json(request, stored.to_json())


async def role_read(request: web.Request) -> web.Response:
    _enabled(request)
    acl = guard.state_of(request).acl
    stored = acl.get_role(request.match_info.get("id", ""), request.match_info.get("name", ""))
    return _json(request, stored.to_json())


async def role_delete(request: web.Request) -> web.Response:
    _enabled(request)
    await guard.state_of(request).acl.delete_role(request.match_info["id"])
    return _json(request, True)


async def role_list(request: web.Request) -> web.Response:
    _enabled(request)
    roles = guard.state_of(request).acl.roles()
    policy = request.query.get("policy")
    if policy:
        roles = [r for r in roles if any(p.id == policy for p in r.record.policies)]
    return _json(request, [r.to_json() for r in roles])


# -- auth methods and binding rules ------------------------------------------------------------


def _method_stub(stored: Stored[Any]) -> Doc:
    doc = stored.to_json()
    doc.pop("Config", None)
    return doc


async def method_write(request: web.Request) -> web.Response:
    _enabled(request)
    logins = guard.state_of(request).logins
    stored = await logins.write_method(await _body(request), request.match_info.get("name", ""))
    return _json(request, stored.to_json())


async def method_read(request: web.Request) -> web.Response:
    _enabled(request)
    stored = guard.state_of(request).logins.get_method(request.match_info["name"])
    return _json(request, stored.to_json())


async def method_delete(request: web.Request) -> web.Response:
    _enabled(request)
    await guard.state_of(request).logins.delete_method(request.match_info["name"])
    return _json(request, True)


async def method_list(request: web.Request) -> web.Response:
    _enabled(request)
    return _json(request, [_method_stub(m) for m in guard.state_of(request).logins.methods()])


async def rule_write(request: web.Request) -> web.Response:
    _enabled(request)
    logins = guard.state_of(request).logins
    stored = await logins.write_rule(await _body(request), request.match_info.get("id", ""))
    return _json(request, stored.to_json())


async def rule_read(request: web.Request) -> web.Response:
    _enabled(request)
    stored = guard.state_of(request).logins.get_rule(request.match_info["id"])
    return _json(request, stored.to_json())


async def rule_delete(request: web.Request) -> web.Response:
    _enabled(request)
    await guard.state_of(request).logins.delete_rule(request.match_info["id"])
    return _json(request, True)


async def rule_list(request: web.Request) -> web.Response:
    _enabled(request)
    rules = guard.state_of(request).logins.rules(request.query.get("authmethod", ""))
    return _json(request, [r.to_json() for r in rules])


# -- login and logout ----------------------------------------------------------------------------


def client_address(request: web.Request) -> str:
    """The address a login is counted against: the peer's IP; "unix" on a unix socket."""
    return request.remote or "unix"


async def login(request: web.Request) -> web.Response:
    """No token needed (Consul ignores the request's own): the bearer token is the proof.
    Rate-limited per client address before anything is read (``control.loginlimit``)."""
    _enabled(request)
    state = guard.state_of(request)
    limiter = state.login_limit
    wait = limiter.take(client_address(request))
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise web.HTTPTooManyRequests(
            text=f"Too many login attempts from this address: retry in {seconds} s\n",
            headers={"Retry-After": str(seconds)},
        )
    try:
        stored = await state.logins.login(await _body(request))
    except Exception:
        limiter.failed += 1
        raise
    return _json(request, stored.to_json())


async def logout(request: web.Request) -> web.Response:
    """Deletes the request's own token, which a login must have made."""
    _enabled(request)
    secret = guard.secret_of(request)
    if not secret:
        raise web.HTTPUnauthorized(text="Supplied token does not exist\n")
    await guard.state_of(request).logins.logout(secret)
    return _json(request, True)


# -- templated policies --------------------------------------------------------------------------


def _template(request: web.Request) -> Template:
    name = request.match_info.get("name", "")
    if not name:
        raise ValidationError("Missing templated policy Name")
    template = TEMPLATES.get(name)
    if template is None:
        raise ValidationError(f"Invalid templated policy Name: {name}")
    return template


async def templated_list(request: web.Request) -> web.Response:
    _enabled(request)
    return _json(request, {name: t.to_json() for name, t in sorted(TEMPLATES.items())})


async def templated_read(request: web.Request) -> web.Response:
    _enabled(request)
    return _json(request, _template(request).to_json())


async def templated_preview(request: web.Request) -> web.Response:
    """The synthetic policy the template makes with the body's variables (``{"Name": ...}``;
    an empty body is no variables). Consul validates them as given: a missing ``Name`` is
    an empty one here."""
    _enabled(request)
    template = _template(request)
    raw = await request.read()
    doc: Any = await _body(request) if raw.strip() else {}
    f = AclFields("TemplatedPolicyVariables", doc)
    name = f.text("Name")
    f.done()
    problem = variable_problem(template, name)
    if problem:
        raise ValidationError(f"validation error for templated policy: {template.name}: {problem}")
    return _json(request, synthetic_doc(template, name))


# -- what may this token do ---------------------------------------------------------------------

AUTHORIZE_MAX = 64  # Consul's limit per request
RESOURCES = (*SEGMENTED, *SINGLE, "intention")


async def authorize(request: web.Request) -> web.Response:
    """Consul's ``/v1/internal/acl/authorize``: ``[{Resource, Segment, Access}]`` answered
    with ``Allow`` for the request's own token (how connect-init checks its login token may
    write its service before it hands it to the sidecar)."""
    _enabled(request)
    body = await _body(request)
    if not isinstance(body, list):
        raise ValidationError("Failed to decode request body: expected a list")
    if len(body) > AUTHORIZE_MAX:
        raise ValidationError(
            f"Refusing to process more than {AUTHORIZE_MAX} authorizations at once"
        )
    authz = guard.authorizer(request)
    answers = []
    for item in body:
        f = AclFields("Authorization", item)
        resource, segment, access = f.text("Resource"), f.text("Segment"), f.text("Access")
        f.done()
        if resource not in RESOURCES:
            raise ValidationError(f"Resource: unknown resource {resource!r}")
        if access not in ("read", "write", "list"):
            raise ValidationError(f"Access: {access!r} is not read, write or list")
        allowed = authz is None or authz.allowed(resource, Access(access), segment)
        answers.append(
            {"Resource": resource, "Segment": segment, "Access": access, "Allow": allowed}
        )
    return _json(request, answers)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_put("/v1/acl/bootstrap", bootstrap)
    r.add_get("/v1/acl/token/self", token_self)
    r.add_put("/v1/acl/token", token_create)
    r.add_get("/v1/acl/token/{id}", token_read)
    r.add_put("/v1/acl/token/{id}", token_update)
    r.add_delete("/v1/acl/token/{id}", token_delete)
    r.add_get("/v1/acl/tokens", token_list)
    r.add_put("/v1/acl/policy", policy_write)
    r.add_get("/v1/acl/policy/name/{name}", policy_read)
    r.add_get("/v1/acl/policy/{id}", policy_read)
    r.add_put("/v1/acl/policy/{id}", policy_write)
    r.add_delete("/v1/acl/policy/{id}", policy_delete)
    r.add_get("/v1/acl/policies", policy_list)
    r.add_put("/v1/acl/role", role_write)
    r.add_get("/v1/acl/role/name/{name}", role_read)
    r.add_get("/v1/acl/role/{id}", role_read)
    r.add_put("/v1/acl/role/{id}", role_write)
    r.add_delete("/v1/acl/role/{id}", role_delete)
    r.add_get("/v1/acl/roles", role_list)
    r.add_put("/v1/acl/auth-method", method_write)
    r.add_get("/v1/acl/auth-method/{name}", method_read)
    r.add_put("/v1/acl/auth-method/{name}", method_write)
    r.add_delete("/v1/acl/auth-method/{name}", method_delete)
    r.add_get("/v1/acl/auth-methods", method_list)
    r.add_put("/v1/acl/binding-rule", rule_write)
    r.add_get("/v1/acl/binding-rule/{id}", rule_read)
    r.add_put("/v1/acl/binding-rule/{id}", rule_write)
    r.add_delete("/v1/acl/binding-rule/{id}", rule_delete)
    r.add_get("/v1/acl/binding-rules", rule_list)
    r.add_get("/v1/acl/templated-policies", templated_list)
    r.add_get("/v1/acl/templated-policy/name/{name:.+}", templated_read)
    r.add_post("/v1/acl/templated-policy/preview/{name:.+}", templated_preview)
    r.add_post("/v1/acl/login", login)
    r.add_post("/v1/acl/logout", logout)
    r.add_post("/v1/internal/acl/authorize", authorize)


__all__ = ["add_routes"]
