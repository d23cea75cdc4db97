"""Golden listings a reviewer can read: who may do what, and the rules Loom synthesizes.

``acl/permissions.txt`` is a matrix of fixed questions against a few typical tokens (the
anonymous token under default deny and allow, a service identity, the management policy, a
policy using every resource); ``acl/synthesized.hcl`` the policies Consul's templates give a
service and a node identity; ``acl/every_resource.hcl``/``.json`` the canonical printing of a
policy using every resource. Refresh with ``pytest --update-golden``.
"""

from __future__ import annotations

import json

from loom.acl.authorizer import Authorizer
from loom.acl.records import (
    GLOBAL_MANAGEMENT,
    NodeIdentity,
    ServiceIdentity,
    synthesized_node_policy,
    synthesized_policy,
)
from loom.acl.rules import Access, parse_rules
from tests.conftest import Golden
from tests.unit.acl.acltest import EVERY_RESOURCE_HCL

QUESTIONS = [
    ("service", Access.READ, "web"),
    ("service", Access.WRITE, "web"),
    ("service", Access.WRITE, "web-sidecar-proxy"),
    ("service", Access.WRITE, "db"),
    ("intention", Access.READ, "web"),
    ("intention", Access.WRITE, "web"),
    ("intention", Access.WRITE, "*"),
    ("node", Access.READ, "n1"),
    ("node", Access.WRITE, "n1"),
    ("key", Access.LIST, "foo/x"),
    ("key", Access.WRITE, "foo/bar"),
    ("agent", Access.READ, "root"),
    ("session", Access.WRITE, "n1"),
    ("event", Access.WRITE, "deploy"),
    ("query", Access.WRITE, "q"),
    ("operator", Access.READ, ""),
    ("operator", Access.WRITE, ""),
    ("mesh", Access.WRITE, ""),
    ("peering", Access.READ, ""),
    ("keyring", Access.READ, ""),
    ("acl", Access.READ, ""),
    ("acl", Access.WRITE, ""),
]


def tokens() -> dict[str, Authorizer]:
    web = synthesized_policy(ServiceIdentity("web")).parsed
    return {
        "anonymous, default deny": Authorizer([], default_allow=False),
        "anonymous, default allow": Authorizer([], default_allow=True),
        "service identity web": Authorizer([web], default_allow=False),
        "global-management": Authorizer([GLOBAL_MANAGEMENT.parsed], default_allow=False),
        "every resource": Authorizer([parse_rules(EVERY_RESOURCE_HCL)], default_allow=False),
    }


def test_the_permission_matrix_of_typical_tokens(golden: Golden) -> None:
    lines = []
    for label, authz in tokens().items():
        lines.append(f"# {label}")
        for resource, access, name in QUESTIONS:
            verdict = "allow" if authz.allowed(resource, access, name) else "deny"
            lines.append(f"{resource}:{access} {name or '-'}: {verdict}")
    golden.check("acl/permissions.txt", "\n".join(lines) + "\n")


def test_the_policies_synthesized_for_identities(golden: Golden) -> None:
    service = synthesized_policy(ServiceIdentity("web", ("dc1",)))
    node = synthesized_node_policy(NodeIdentity("node-1", "dc1"))
    text = "".join(
        f"# {p.description} (datacenters: {', '.join(p.datacenters) or 'all'})\n{p.rules}\n"
        for p in (service, node)
    )
    golden.check("acl/synthesized.hcl", text)


def test_the_canonical_printing_of_every_resource(golden: Golden) -> None:
    rules = parse_rules(EVERY_RESOURCE_HCL)
    golden.check("acl/every_resource.hcl", rules.to_hcl())
    golden.check(
        "acl/every_resource.json",
        json.dumps(json.loads(rules.to_json()), indent=1, sort_keys=True) + "\n",
    )
