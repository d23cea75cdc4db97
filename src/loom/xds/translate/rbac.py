"""Intentions -> Envoy RBAC policy (action ALLOW), precedence preserved.

Intentions arrive sorted by precedence. A source is allowed when the first intention that
matches it allows it, or when none matches and the default policy allows. As one ALLOW
policy set: each allow intention admits ``its matcher AND NOT (every deny ranked above it)``;
the default allow admits ``anyone AND NOT (every deny)``. An empty policy set denies all.
"""

from __future__ import annotations

from typing import Any

from loom.domain.entries import HttpMatch
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


def _http_permission(http: HttpMatch) -> Doc:
    """Consul's HTTP block -> an Envoy RBAC permission (all parts must match)."""
    parts: list[Doc] = []
    for value, kind in ((http.path_exact, "exact"), (http.path_prefix, "prefix")):
        if value is not None:
            parts.append({"url_path": {"path": {kind: value}}})
    if http.path_regex is not None:
        parts.append({"url_path": {"path": {"safe_regex": {"regex": http.path_regex}}}})
    if http.methods:
        methods = [
            {"header": {"name": ":method", "string_match": {"exact": m}}} for m in http.methods
        ]
        parts.append(methods[0] if len(methods) == 1 else {"or_rules": {"rules": methods}})
    for h in http.headers:
        header: Doc = {"name": h.name.lower()}
        if h.present is not None:
            header["present_match"] = h.present
        else:
            for text, kind in ((h.exact, "exact"), (h.prefix, "prefix"), (h.suffix, "suffix")):
                if text is not None:
                    header["string_match"] = {kind: text}
            if h.regex is not None:
                header["string_match"] = {"safe_regex": {"regex": h.regex}}
            if "string_match" not in header:
                header["present_match"] = True
        if h.invert:
            header["invert_match"] = True
        parts.append({"header": header})
    if not parts:
        return {"any": True}
    return parts[0] if len(parts) == 1 else {"and_rules": {"rules": parts}}


def _or(rules: list[Doc]) -> Doc:
    return rules[0] if len(rules) == 1 else {"or_rules": {"rules": rules}}


def http_rbac_policies(
    trust_domain: str, rules: tuple[AccessRule, ...], default_allow: bool
) -> Doc:
    """Intentions with L7 permissions -> an HTTP RBAC policy set (action ALLOW).

    As for L4, each intention only sees sources no higher-ranked deny or L7 intention has
    claimed (the first matching intention is terminal). An L7 intention admits a request
    when some allow permission matches and no deny permission listed before it does; when no
    permission matches, the default policy decides (Consul's rule).
    """
    policies: Doc = {}
    claimed: list[Doc] = []
    for n, rule in enumerate(rules):
        matcher = _matcher(trust_domain, rule.source)
        name = f"intention-{n}-{rule.source.namespace}-{rule.source.name}"
        if not rule.permissions:
            if rule.allow:
                policies[name] = {
                    "permissions": [{"any": True}],
                    "principals": [_and_not(matcher, list(claimed))],
                }
            else:
                claimed.append(matcher)
            continue
        perms: list[Doc] = []
        denied_before: list[Doc] = []
        every: list[Doc] = []
        for p in rule.permissions:
            match = _http_permission(p.http)
            every.append(match)
            if p.allow:
                perms.append(
                    match
                    if not denied_before
                    else {"and_rules": {"rules": [match, {"not_rule": _or(denied_before)}]}}
                )
            else:
                denied_before.append(match)
        if default_allow:
            perms.append({"not_rule": _or(every)})
        if perms:
            policies[name] = {
                "permissions": perms,
                "principals": [_and_not(matcher, list(claimed))],
            }
        claimed.append(matcher)
    if default_allow:
        policies["default-allow"] = {
            "permissions": [{"any": True}],
            "principals": [_and_not({"any": True}, claimed)],
        }
    return {"action": "ALLOW", "policies": policies}


def http_rbac_filter(trust_domain: str, rules: tuple[AccessRule, ...], default_allow: bool) -> Doc:
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": http_rbac_policies(trust_domain, rules, default_allow),
        },
    }
