"""``loom acl token create`` and ``loom acl templated-policy list|read|preview``: Consul's
``consul acl`` commands of the same names, with its flags.

``loom acl token create -templated-policy builtin/service -var name:web`` makes a token
whose rights are the ``builtin/service`` template's for ``web``, as ``consul acl token
create`` does; ``-policy-name``, ``-role-name``, ``-service-identity`` and
``-node-identity`` add the other grants Consul's command offers. Building the request and
formatting the answers are pure functions (``token_request``, ``format_token``...); the
server checks everything (an unknown template or a missing variable is its 400, shown as
it is).
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import TYPE_CHECKING, Any

from loom.cli.api import _addr, _client
from loom.cli.errors import UsageError
from loom.cli.flags import add_format_flag, emit

if TYPE_CHECKING:
    from loom.cli import Commands


def template_variables(pairs: list[str]) -> dict[str, str]:
    """``-var name:web`` pairs as Consul's ``TemplateVariables`` (``{"Name": "web"}``); the
    only variable Consul's templates have is ``name``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise UsageError(f"acl: -var {pair!r}: expected VariableName:Value (name:web)")
        if key.strip().lower() != "name":
            raise UsageError(f"acl: -var {pair!r}: unknown variable {key!r} (only name)")
        out["Name"] = value
    return out


def _service_identity(text: str) -> dict[str, Any]:
    name, _, dcs = text.partition(":")
    doc: dict[str, Any] = {"ServiceName": name}
    if dcs:
        doc["Datacenters"] = [d for d in dcs.split(",") if d]
    return doc


def _node_identity(text: str) -> dict[str, str]:
    name, sep, dc = text.partition(":")
    if not sep or not dc:
        raise UsageError(f"acl: -node-identity {text!r}: expected NODE:DATACENTER")
    return {"NodeName": name, "Datacenter": dc}


def token_request(args: argparse.Namespace) -> dict[str, Any]:
    """The ``PUT /v1/acl/token`` body the flags describe."""
    if args.var and not args.templated_policy:
        raise UsageError("acl: -var needs -templated-policy")
    body: dict[str, Any] = {"Description": args.description, "Local": args.local}
    if args.policy_name or args.policy_id:
        body["Policies"] = [{"Name": n} for n in args.policy_name] + [
            {"ID": i} for i in args.policy_id
        ]
    if args.role_name or args.role_id:
        body["Roles"] = [{"Name": n} for n in args.role_name] + [{"ID": i} for i in args.role_id]
    if args.service_identity:
        body["ServiceIdentities"] = [_service_identity(s) for s in args.service_identity]
    if args.node_identity:
        body["NodeIdentities"] = [_node_identity(n) for n in args.node_identity]
    if args.templated_policy:
        templated: dict[str, Any] = {"TemplateName": args.templated_policy}
        if args.var:
            templated["TemplateVariables"] = template_variables(args.var)
        body["TemplatedPolicies"] = [templated]
    if args.expires_ttl:
        body["ExpirationTTL"] = args.expires_ttl
    return body


def format_token(token: dict[str, Any]) -> str:
    """A token as ``consul acl token create`` prints it."""
    lines = [
        f"AccessorID:       {token.get('AccessorID', '')}",
        f"SecretID:         {token.get('SecretID', '')}",
        f"Description:      {token.get('Description', '')}",
        f"Local:            {str(token.get('Local', False)).lower()}",
        f"Create Time:      {token.get('CreateTime', '')}",
    ]
    if token.get("ExpirationTime"):
        lines.append(f"Expiration Time:  {token['ExpirationTime']}")
    if token.get("Policies"):
        lines.append("Policies:")
        lines += [f"   {p.get('ID', '')} - {p.get('Name', '')}" for p in token["Policies"]]
    if token.get("Roles"):
        lines.append("Roles:")
        lines += [f"   {r.get('ID', '')} - {r.get('Name', '')}" for r in token["Roles"]]
    if token.get("ServiceIdentities"):
        lines.append("Service Identities:")
        for s in token["ServiceIdentities"]:
            dcs = ", ".join(s.get("Datacenters") or []) or "all"
            lines.append(f"   {s.get('ServiceName', '')} (Datacenters: {dcs})")
    if token.get("NodeIdentities"):
        lines.append("Node Identities:")
        lines += [f"   {n.get('NodeName', '')} (Datacenter: {n.get('Datacenter', '')})"
                  for n in token["NodeIdentities"]]  # fmt: skip
    if token.get("TemplatedPolicies"):
        lines.append("Templated Policies:")
        for t in token["TemplatedPolicies"]:
            lines.append(f"   {t.get('TemplateName', '')}")
            name = (t.get("TemplateVariables") or {}).get("Name")
            if name:
                lines.append(f"      Name: {name}")
            lines.append(f"      Datacenters: {', '.join(t.get('Datacenters') or []) or 'all'}")
    return "\n".join(lines) + "\n"


def format_templates(templates: dict[str, Any]) -> str:
    """``consul acl templated-policy list``: one name a line, then its description."""
    return "".join(f"{name}\n   {t.get('Description', '')}\n" for name, t in templates.items())


def format_template(template: dict[str, Any]) -> str:
    return (
        f"Name:            {template.get('TemplateName', '')}\n"
        f"Description:     {template.get('Description', '')}\n"
        f"Input variables: {'Name: String - Required' if template.get('Schema') else 'None'}\n"
        f"Example usage:\n\tloom acl token create -templated-policy "
        f"{template.get('TemplateName', '')}"
        f"{' -var name:api' if template.get('Schema') else ''}\n"
        f"Raw Template:\n{template.get('Template', '')}\n"
    )


def format_policy(policy: dict[str, Any]) -> str:
    return (
        f"ID:           {policy.get('ID', '')}\n"
        f"Name:         {policy.get('Name', '')}\n"
        f"Description:  {policy.get('Description', '')}\n"
        f"Rules:\n{policy.get('Rules', '')}\n"
    )


def _path(name: str) -> str:
    return urllib.parse.quote(name, safe="/")


def _token_create(args: argparse.Namespace) -> int:
    emit(args, _client(args).put("/v1/acl/token", token_request(args)), format_token)
    return 0


def _templated_list(args: argparse.Namespace) -> int:
    emit(args, _client(args).get("/v1/acl/templated-policies"), format_templates)
    return 0


def _templated_read(args: argparse.Namespace) -> int:
    path = f"/v1/acl/templated-policy/name/{_path(args.name)}"
    emit(args, _client(args).get(path), format_template)
    return 0


def _templated_preview(args: argparse.Namespace) -> int:
    path = f"/v1/acl/templated-policy/preview/{_path(args.name)}"
    answer = _client(args).request("POST", path, template_variables(args.var)).body
    emit(args, answer, format_policy)
    return 0


def register(commands: Commands) -> None:
    acl = commands.group("acl", "ACL tokens and templated policies (Consul's consul acl)")
    token = acl.add_parser("token", help="ACL tokens")
    tokens = token.add_subparsers(title="commands", metavar="COMMAND")
    p = tokens.add_parser("create", help="create a token (consul acl token create)")
    p.add_argument("--description", default="", help="the token's description")
    p.add_argument("--policy-name", action="append", default=[], help="a policy, by name")
    p.add_argument("--policy-id", action="append", default=[], help="a policy, by ID")
    p.add_argument("--role-name", action="append", default=[], help="a role, by name")
    p.add_argument("--role-id", action="append", default=[], help="a role, by ID")
    p.add_argument("--service-identity", action="append", default=[],
                   metavar="NAME[:DC,...]", help="a service identity")  # fmt: skip
    p.add_argument("--node-identity", action="append", default=[], metavar="NODE:DC",
                   help="a node identity")  # fmt: skip
    p.add_argument("--templated-policy", default="", metavar="NAME",
                   help="a templated policy (builtin/service, /node, /api-gateway...)")  # fmt: skip
    p.add_argument("--var", action="append", default=[], metavar="name:VALUE",
                   help="a variable of the templated policy (name:web)")  # fmt: skip
    p.add_argument("--local", action="store_true", help="a token of this datacenter only")
    p.add_argument("--expires-ttl", default="", metavar="DURATION", help="expire after (1h)")
    _addr(p)
    add_format_flag(p)
    p.set_defaults(func=_token_create)

    tp = acl.add_parser("templated-policy", help="the built-in templated policies")
    tps = tp.add_subparsers(title="commands", metavar="COMMAND")
    p = tps.add_parser("list", help="list the templated policies")
    _addr(p)
    add_format_flag(p)
    p.set_defaults(func=_templated_list)
    p = tps.add_parser("read", help="show one templated policy")
    p.add_argument("--name", required=True, help="its name (builtin/service)")
    _addr(p)
    add_format_flag(p)
    p.set_defaults(func=_templated_read)
    p = tps.add_parser("preview", help="the policy a templated policy makes with -var")
    p.add_argument("--name", required=True, help="its name (builtin/service)")
    p.add_argument("--var", action="append", default=[], metavar="name:VALUE",
                   help="a variable (name:web)")  # fmt: skip
    _addr(p)
    add_format_flag(p)
    p.set_defaults(func=_templated_preview)
