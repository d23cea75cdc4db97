"""Intentions -> Envoy RBAC policy (action ALLOW), precedence preserved.

Intentions arrive sorted by precedence. A source is allowed when the first intention that
matches it allows it, or when none matches and the default policy allows. As one ALLOW
policy set: each allow intention admits ``its matcher AND NOT (every deny ranked above it)``;
the default allow admits ``anyone AND NOT (every deny)``. An empty policy set denies all.
"""

from __future__ import annotations

from typing import Any

from loom.xds.inputs import AccessRule, Principal

Doc = dict[str, Any]


def principal_regex(trust_domain: str, p: Principal) -> str:
    td = trust_domain.replace(".", r"\.")
    ns = "[^/]+" if p.namespace == "*" else p.namespace
    name = "[^/]+" if p.name == "*" else p.name
    return f"^spiffe://{td}/ns/{ns}/dc/[^/]+/svc/{name}$"


def _matcher(trust_domain: str, p: Principal) -> Doc:
    return {
        "authenticated": {
            "principal_name": {"safe_regex": {"regex": principal_regex(trust_domain, p)}}
        }
    }


def _and_not(base: Doc, excluded: list[Doc]) -> Doc:
    if not excluded:
        return base
    blocked = excluded[0] if len(excluded) == 1 else {"or_ids": {"ids": excluded}}
    return {"and_ids": {"ids": [base, {"not_id": blocked}]}}


def rbac_policies(trust_domain: str, rules: tuple[AccessRule, ...], default_allow: bool) -> Doc:
    policies: Doc = {}
    denies_above: list[Doc] = []
    for n, rule in enumerate(rules):
        matcher = _matcher(trust_domain, rule.source)
        if rule.allow:
            name = f"intention-{n}-allow-{rule.source.namespace}-{rule.source.name}"
            policies[name] = {
                "permissions": [{"any": True}],
                "principals": [_and_not(matcher, list(denies_above))],
            }
        else:
            denies_above.append(matcher)
    if default_allow:
        policies["default-allow"] = {
            "permissions": [{"any": True}],
            "principals": [_and_not({"any": True}, denies_above)],
        }
    return {"action": "ALLOW", "policies": policies}


def network_rbac_filter(
    trust_domain: str, rules: tuple[AccessRule, ...], default_allow: bool, stat_prefix: str
) -> Doc:
    return {
        "name": "envoy.filters.network.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": stat_prefix,
            "rules": rbac_policies(trust_domain, rules, default_allow),
        },
    }
