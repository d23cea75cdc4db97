"""Templated policies (Consul 1.17+): built-in rule templates a token or role names with
variables, rendered to a synthetic policy exactly as Consul renders them.

``TemplatedPolicies: [{"TemplateName": "builtin/service", "TemplateVariables": {"Name":
"web"}}]`` on a token or role grants what Consul's ``builtin/service`` template grants ``web``
(the same rules a service identity does); ``builtin/node`` a node's, ``builtin/dns`` what
Consul's DNS needs. The templates' text, IDs, JSON schemas and descriptions are Consul's
(``agent/structs/acltemplatedpolicy``), so ``GET /v1/acl/templated-policies`` reads as
Consul's, and a synthetic policy's ID and name are derived from its rules as Consul derives
them (the hex of the rules followed by the hex of an empty FNV-128a sum: Go's
``hasher.Sum(rules)`` appends the hash of nothing to the rules). Validation follows Consul's:
an unknown template, a missing ``Name`` where the schema requires one, or a name that is not
a valid service or node identity name is refused with Consul's wording.

The templates are those of current Consul CE: ``builtin/service``, ``builtin/node``,
``builtin/dns``, ``builtin/nomad-server``, ``builtin/nomad-client`` and ``builtin/api-gateway``.
``builtin/workload-identity`` (Consul 1.17's, for the v2 catalog) is not: Consul removed it
again with the v2 catalog, leaving its ID unused. A ``Name`` that a template writes into its
rules must be a valid identity name even where Consul's schema only asks for one character
(``builtin/api-gateway``) or takes no variables (``builtin/nomad-server``): the name is pasted
into the rules text, and a quote in it would write rules of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from loom.acl.identities import valid_identity_name
from loom.acl.wire import Fields

SERVICE = "builtin/service"
NODE = "builtin/node"
DNS = "builtin/dns"
NOMAD_SERVER = "builtin/nomad-server"
NOMAD_CLIENT = "builtin/nomad-client"
API_GATEWAY = "builtin/api-gateway"

_NAME_SCHEMA = (
    '{\n\t"type": "object",\n\t"properties": {\n\t\t"name": { "type": "string", '
    '"$ref": "#/definitions/min-length-one" }\n\t},\n\t"required": ["name"],\n\t'
    '"definitions": {\n\t\t"min-length-one": {\n\t\t\t\t"type": "string",\n\t\t\t\t'
    '"minLength": 1\n\t\t}\n\t}\n}'
)
_NAME = "{{.Name}}"
_FNV128A_EMPTY = "6c62272e07bb014262b821756295c58d"
"""The FNV-128a sum of no bytes (its offset basis), which Consul's IDs end with."""


@dataclass(frozen=True)
class Template:
    """One built-in template, as ``GET /v1/acl/templated-policy/name/:name`` shows it."""

    name: str
    id: str
    schema: str
    """Consul's JSON schema of the variables; empty: the template takes none."""
    template: str
    """The rules, ``{{.Name}}`` standing for the ``Name`` variable."""
    description: str

    def to_json(self) -> dict[str, str]:
        return {
            "TemplateName": self.name,
            "Schema": self.schema,
            "Template": self.template,
            "Description": self.description,
        }


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            SERVICE,
            "00000000-0000-0000-0000-000000000003",
            _NAME_SCHEMA,
            '\nservice "{{.Name}}" {\n\tpolicy = "write"\n}\n'
            'service "{{.Name}}-sidecar-proxy" {\n\tpolicy = "write"\n}\n'
            'service_prefix "" {\n\tpolicy = "read"\n}\n'
            'node_prefix "" {\n\tpolicy = "read"\n}',
            "Gives the token or role permissions to register a service and discover services "
            "in the Consul catalog. It also gives the specified service's sidecar proxy the "
            "permission to discover and route traffic to other services.",
        ),
        Template(
            NODE,
            "00000000-0000-0000-0000-000000000004",
            _NAME_SCHEMA,
            '\nnode "{{.Name}}" {\n\tpolicy = "write"\n}\n'
            'service_prefix "" {\n\tpolicy = "read"\n}',
            "Gives the token or role permissions for a register an agent/node into the "
            "catalog. A node is typically a consul agent but can also be a physical server, "
            "cloud instance or a container.",
        ),
        Template(
            DNS,
            "00000000-0000-0000-0000-000000000005",
            "",
            '\nnode_prefix "" {\n\tpolicy = "read"\n}\nservice_prefix "" {\n\tpolicy = "read"\n}\n'
            'query_prefix "" {\n\tpolicy = "read"\n}',
            "Gives the token or role permissions for the Consul DNS to query services in the "
            "network.",
        ),
        Template(
            NOMAD_SERVER,
            "00000000-0000-0000-0000-000000000006",
            "",
            'acl  = "write"\nmesh = "write"\n\nagent "{{.Name}}" {\n  policy = "read"\n}\n'
            'node "{{.Name}}" {\n  policy = "write"\n}\n'
            'service_prefix "" {\n  policy = "write"\n}\n',
            "Gives the token or role permissions required for integration with a nomad server.",
        ),
        Template(
            API_GATEWAY,
            "00000000-0000-0000-0000-000000000008",
            _NAME_SCHEMA,
            'mesh = "read"\nnode_prefix "" {\n\tpolicy = "read"\n}\n'
            'service_prefix "" {\n\tpolicy = "read"\n}\n'
            'service "{{.Name}}" {\n\tpolicy = "write"\n}',
            "Gives the token or role permissions for a Consul api gateway",
        ),
        Template(
            NOMAD_CLIENT,
            "00000000-0000-0000-0000-000000000009",
            "",
            'agent_prefix "" {\n  policy = "read"\n}\nnode_prefix "" {\n  policy = "read"\n}\n'
            'service_prefix "" {\n  policy = "write"\n}\nkey_prefix "" {\n  policy = "read"\n}',
            "Gives the token or role permissions required for integration with a nomad client.",
        ),
    )
}


def _quoted(text: str) -> str:
    """``text`` quoted as Go's ``%q`` quotes it (near enough: one line, escapes shown)."""
    return json.dumps(text, ensure_ascii=False)


def variable_problem(template: Template, name: str | None) -> str:
    """What Consul's ``ValidateTemplatedPolicy`` says of these variables; empty: none.

    ``name`` is None when no ``TemplateVariables`` were given at all (Go's nil, which the
    schema's ``"type": "object"`` refuses), ``""`` when they were given without a name (which
    the service and node templates refuse as an invalid identity name, checked first)."""
    pasted = name and template.name not in (SERVICE, NODE) and _NAME in template.template
    if pasted and not valid_identity_name(name or ""):  # Loom's own rule: see the docstring
        return (
            f"name {_quoted(name or '')} is not a valid name. Only lowercase alphanumeric "
            "characters, '-' and '_' are allowed"
        )
    if not template.schema:
        return ""
    if name is not None and template.name == SERVICE and not valid_identity_name(name):
        return (
            f"service identity {_quoted(name)} has an invalid name. Only lowercase alphanumeric "
            "characters, '-' and '_' are allowed"
        )
    if name is not None and template.name == NODE and not valid_identity_name(name):
        return (  # two spaces: Consul's own message has them
            f"node identity {_quoted(name)}  has an invalid name. Only lowercase alphanumeric "
            "characters, '-' and '_' are allowed"
        )
    if name is None:
        return "Invalid type. Expected: object, given: null"
    if not name:
        return "name is required"
    return ""


def render(template: Template, name: str | None) -> str:
    """The template's rules with ``Name`` filled in (Go's template prints a missing value of
    a template without variables as nothing; those templates never use it)."""
    return template.template.replace(_NAME, name or "")


def synthetic_doc(template: Template, name: str | None) -> dict[str, Any]:
    """The synthetic policy as ``POST /v1/acl/templated-policy/preview/:name`` answers it."""
    rules = render(template, name)
    ident = rules.encode().hex() + _FNV128A_EMPTY
    return {
        "ID": ident,
        "Name": f"synthetic-policy-{ident}",
        "Description": f"synthetic policy generated from templated policy: {template.name}",
        "Rules": rules,
        "CreateIndex": 0,
        "ModifyIndex": 0,
    }


@dataclass(frozen=True)
class TemplatedPolicy:
    """One ``TemplatedPolicies`` entry of a token or role."""

    template_name: str
    name: str | None = None
    """The ``Name`` variable; None when the entry had no ``TemplateVariables``."""
    datacenters: tuple[str, ...] = ()

    @property
    def template(self) -> Template:
        return TEMPLATES[self.template_name]

    @classmethod
    def from_json(cls, record: str, doc: object, where: str) -> TemplatedPolicy:
        """One entry, checked as Consul checks a token's or role's (``record``: "Token" or
        "Role"); ``RecordError`` in Consul's words."""
        f = Fields(record, doc, where)
        template_name = f.text("TemplateName")
        f.text("TemplateID")  # Consul's hidden field: accepted, derived from the name again
        variables = f.raw("TemplateVariables")
        datacenters = f.strings("Datacenters")
        f.done()
        this = "this token" if record == "Token" else "this role"
        if not template_name:
            message = f"templated policy is missing the template name field on {this}"
            raise f.error("TemplateName", message)
        template = TEMPLATES.get(template_name)
        if template is None:
            message = f"templated policy with an invalid templated name: {template_name} for {this}"
            raise f.error("TemplateName", message)
        name: str | None = None
        if variables is not None:
            v = Fields(record, variables, f"{where}TemplateVariables.")
            name = v.text("Name")
            v.done()
        problem = variable_problem(template, name)
        if problem:
            message = (
                f"encountered templated policy variable validation error for {template_name}: "
                f"{problem}"
            )
            raise f.error("TemplateVariables", message)
        keep = template.schema or (name and _NAME in template.template)
        return cls(template_name, name if keep else None, datacenters)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"TemplateName": self.template_name}
        if self.name is not None:
            doc["TemplateVariables"] = {"Name": self.name}
        if self.datacenters:
            doc["Datacenters"] = list(self.datacenters)
        return doc

    def rules(self) -> str:
        return render(self.template, self.name)


def read_templated(f: Fields, record: str) -> tuple[TemplatedPolicy, ...]:
    """A record's ``TemplatedPolicies``, duplicates dropped as Consul's ``Deduplicate`` does
    (a template without variables once; one with, once per distinct variables)."""
    out: list[TemplatedPolicy] = []
    seen: set[tuple[str, str | None]] = set()
    for where, doc in f.objects("TemplatedPolicies"):
        tp = TemplatedPolicy.from_json(record, doc, where)
        key = (tp.template_name, tp.name)
        if key not in seen:
            seen.add(key)
            out.append(tp)
    return tuple(out)


__all__ = [
    "API_GATEWAY",
    "DNS",
    "NODE",
    "NOMAD_CLIENT",
    "NOMAD_SERVER",
    "SERVICE",
    "TEMPLATES",
    "Template",
    "TemplatedPolicy",
    "read_templated",
    "render",
    "synthetic_doc",
    "variable_problem",
]
