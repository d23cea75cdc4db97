"""Consul's ACL rule language, HCL or JSON, parsed into typed rules.

A policy's ``Rules`` text grants access levels on resources. Named resources come in an exact
form and a prefix form (``service "web"`` / ``service_prefix "web"``) for ``service``,
``node``, ``key``, ``agent``, ``session``, ``event`` and ``query``; ``acl``, ``operator``,
``mesh``, ``peering`` and ``keyring`` are single values. The levels are ``deny``, ``read`` and
``write``, plus ``list`` for keys; a service rule may also carry ``intentions``, the level for
intentions whose destination it names. As in Consul, an unknown resource, an unknown field or a
bad level is an error; unlike Consul's message (which prints a Go struct) ours names the
resource, the field and where it is. ``PolicyRules.to_hcl`` prints rules back in a canonical
form that parses to the same value.

Consul Enterprise's scope blocks parse too: ``namespace "NAME" { ... }``, ``namespace_prefix``,
``partition "NAME" { ... }`` and ``partition_prefix``, a partition block holding namespace
blocks. What they mean is the authorizer's business; here they are checked as Consul's policy
validation checks them: no block inside a namespace block, and inside one none of the rules
Consul keeps out of namespaces (``operator``, ``keyring``, ``mesh``, ``peering``, ``event``,
``query``, and node rules above ``read``), each refusal naming the rule and where it is.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass

from loom.acl.errors import AclError
from loom.acl.hcl import Item, Obj, Scalar, Seq, Value, parse_hcl


class RuleValueError(AclError):
    """The rules parse but say something Consul refuses: unknown resource, field or level."""


class Access(enum.StrEnum):
    DENY = "deny"
    READ = "read"
    LIST = "list"
    WRITE = "write"


# Consul's takesPrecedenceOver: among rules for the same segment, deny > write > list > read.
PRECEDENCE = {Access.DENY: 4, Access.WRITE: 3, Access.LIST: 2, Access.READ: 1}

SEGMENTED = ("service", "node", "key", "agent", "session", "event", "query")
SINGLE = ("acl", "operator", "mesh", "peering", "keyring")
SCOPES = ("namespace", "partition")

# What Consul refuses inside a namespace block (partition-wide or cluster-wide resources).
_NOT_IN_NAMESPACE = frozenset({"operator", "keyring", "mesh", "peering", "event", "query"})


def stronger(a: Access | None, b: Access | None) -> Access | None:
    """The one of two levels that wins a merge (``None`` means "not set" and always loses)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if PRECEDENCE[a] >= PRECEDENCE[b] else b


@dataclass(frozen=True)
class SegmentRule:
    """One ``<resource>[_prefix] "<name>" { policy = ...; intentions = ... }`` block."""

    resource: str
    name: str
    prefix: bool
    policy: Access
    intentions: Access | None = None

    @property
    def keyword(self) -> str:
        return f"{self.resource}_prefix" if self.prefix else self.resource


@dataclass(frozen=True)
class ScopeRule:
    """One ``namespace[_prefix] "<name>" { ... }`` or ``partition[_prefix]`` block."""

    kind: str
    """``"namespace"`` or ``"partition"``."""
    name: str
    prefix: bool
    rules: PolicyRules
    """What the block grants (a partition block's may hold namespace blocks)."""

    @property
    def keyword(self) -> str:
        return f"{self.kind}_prefix" if self.prefix else self.kind


@dataclass(frozen=True)
class PolicyRules:
    """Everything one rules text grants, in the order written."""

    segments: tuple[SegmentRule, ...] = ()
    acl: Access | None = None
    operator: Access | None = None
    mesh: Access | None = None
    peering: Access | None = None
    keyring: Access | None = None
    scopes: tuple[ScopeRule, ...] = ()
    """Enterprise namespace and partition blocks, in the order written."""

    def single(self, name: str) -> Access | None:
        value: Access | None = getattr(self, name)
        return value

    def only(self, resources: frozenset[str]) -> PolicyRules:
        """These rules restricted to ``resources`` (segment resources or single names), with
        no scope blocks: what of them applies where only those resources are decided."""
        def kept(name: str) -> Access | None:
            return self.single(name) if name in resources else None

        return PolicyRules(
            tuple(r for r in self.segments if r.resource in resources),
            acl=kept("acl"),
            operator=kept("operator"),
            mesh=kept("mesh"),
            peering=kept("peering"),
            keyring=kept("keyring"),
        )

    def to_hcl(self) -> str:
        """Canonical HCL: single values first (fixed order), then blocks as written."""
        lines = [f'{name} = "{self.single(name)}"' for name in SINGLE if self.single(name)]
        for rule in self.segments:
            body = f'policy = "{rule.policy}"'
            if rule.intentions is not None:
                body += f' intentions = "{rule.intentions}"'
            lines.append(f"{rule.keyword} {_quote(rule.name)} {{ {body} }}")
        for scope in self.scopes:
            inner = "".join(f"  {line}\n" for line in scope.rules.to_hcl().splitlines())
            lines.append(f"{scope.keyword} {_quote(scope.name)} {{\n{inner}}}")
        return "\n".join(lines) + ("\n" if lines else "")

    def to_json(self) -> str:
        """The same rules in Consul's JSON form (blocks of one keyword as one object)."""
        return json.dumps(self._json_doc(), sort_keys=True)

    def _json_doc(self) -> dict[str, object]:
        doc: dict[str, object] = {n: str(self.single(n)) for n in SINGLE if self.single(n)}
        for rule in self.segments:
            body: dict[str, str] = {"policy": str(rule.policy)}
            if rule.intentions is not None:
                body["intentions"] = str(rule.intentions)
            blocks = doc.setdefault(rule.keyword, [])
            assert isinstance(blocks, list)
            blocks.append({rule.name: body})
        for scope in self.scopes:
            blocks = doc.setdefault(scope.keyword, [])
            assert isinstance(blocks, list)
            blocks.append({scope.name: scope.rules._json_doc()})
        return doc


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# -- a common shape for HCL and JSON: (key, value, where) entries ---------------------------

_Entry = tuple[str, "_Node", str]


@dataclass(frozen=True)
class _Node:
    kind: str  # string number bool object list
    scalar: str = ""
    entries: tuple[_Entry, ...] = ()
    values: tuple[_Node, ...] = ()


def _from_hcl_value(value: Value) -> _Node:
    if isinstance(value, Scalar):
        return _Node(value.kind, scalar=value.value)
    if isinstance(value, Seq):
        return _Node("list", values=tuple(_from_hcl_value(v) for v in value.values))
    assert isinstance(value, Obj)
    return _Node("object", entries=tuple(_from_hcl_item(i) for i in value.items))


def _from_hcl_item(item: Item) -> _Entry:
    node = _from_hcl_value(item.value)
    for label in reversed(item.labels):
        node = _Node("object", entries=((label, node, str(item.pos)),))
    return (item.key, node, str(item.pos))


def _from_json(value: object, where: str) -> _Node:
    if isinstance(value, str):
        return _Node("string", scalar=value)
    if isinstance(value, bool):
        return _Node("bool", scalar=str(value).lower())
    if isinstance(value, int | float):
        return _Node("number", scalar=str(value))
    if isinstance(value, list):
        return _Node(
            "list", values=tuple(_from_json(v, f"{where}[{i}]") for i, v in enumerate(value))
        )
    if isinstance(value, dict):
        entries = tuple(
            (k, _from_json(v, f"{where}.{k}"), f"{where}.{k}") for k, v in value.items()
        )
        return _Node("object", entries=entries)
    raise RuleValueError(f"Invalid ACL rules: {where}: null is not allowed")


# -- meaning ---------------------------------------------------------------------------------


def _objects(node: _Node, what: str, where: str) -> Iterator[_Entry]:
    """Entries of an object, or of a list of objects (HCL and HCL-JSON accept both)."""
    if node.kind == "object":
        yield from node.entries
    elif node.kind == "list":
        for value in node.values:
            yield from _objects(value, what, where)
    else:
        raise RuleValueError(f"Invalid {what}: {where}: expected a block, found a {node.kind}")


def _access(node: _Node, what: str, field: str, where: str, allowed: tuple[Access, ...]) -> Access:
    names = ", ".join(str(a) for a in allowed)
    if node.kind != "string":
        raise RuleValueError(f"Invalid {what}: {where}: {field} must be a string, one of {names}")
    try:
        level = Access(node.scalar)
    except ValueError:
        level = None
    if level is None or level not in allowed:
        raise RuleValueError(
            f"Invalid {what}: {where}: {field} {node.scalar!r} is not one of {names}"
        )
    return level


_BASIC = (Access.DENY, Access.READ, Access.WRITE)
_KEYS = (Access.DENY, Access.READ, Access.LIST, Access.WRITE)


def _segment(keyword: str, name: str, body: _Node, where: str) -> SegmentRule:
    prefix = keyword.endswith("_prefix")
    resource = keyword.removesuffix("_prefix")
    what = f"{keyword} {_quote(name)}"
    if body.kind != "object":
        raise RuleValueError(f"Invalid {what}: {where}: expected a block, found a {body.kind}")
    fields = {"policy", "intentions"} if resource == "service" else {"policy"}
    policy: Access | None = None
    intentions: Access | None = None
    for field, value, at in body.entries:
        if field not in fields:
            raise RuleValueError(f"Invalid {what}: {at}: unknown field {field!r}")
        if field == "policy":
            policy = _access(value, what, field, at, _KEYS if resource == "key" else _BASIC)
        else:
            intentions = _access(value, what, field, at, _BASIC)
    if policy is None:
        raise RuleValueError(f"Invalid {what}: {where}: missing field 'policy'")
    return SegmentRule(resource, name, prefix, policy, intentions)


def _scope_problem(scope: tuple[str, ...], keyword: str) -> str:
    """Why ``keyword`` may not appear inside the blocks ``scope`` (outermost first); empty: it
    may. Consul's rules: a namespace block holds no block, a partition block no partition."""
    resource = keyword.removesuffix("_prefix")
    inside = f"inside a {scope[-1]} block ({' > '.join(scope)})" if scope else ""
    if "namespace" in scope:
        if resource in SCOPES:
            return f"a {keyword} block is not allowed {inside}"
        if resource in _NOT_IN_NAMESPACE:
            return f"{keyword} rules are not allowed {inside}"
    elif resource == "partition" and scope:
        return f"a {keyword} block is not allowed {inside}"
    return ""


def _scope_block(
    kind: str, keyword: str, name: str, body: _Node, where: str, scope: tuple[str, ...]
) -> ScopeRule:
    what = f"{keyword} {_quote(name)}"
    if body.kind != "object":
        raise RuleValueError(f"Invalid {what}: {where}: expected a block, found a {body.kind}")
    rules = _decode(body.entries, (*scope, kind))
    return ScopeRule(kind, name, keyword.endswith("_prefix"), rules)


def _decode(entries: tuple[_Entry, ...], scope: tuple[str, ...] = ()) -> PolicyRules:
    segments: list[SegmentRule] = []
    scopes: list[ScopeRule] = []
    single: dict[str, Access | None] = dict.fromkeys(SINGLE)
    for keyword, node, where in entries:
        resource = keyword.removesuffix("_prefix")
        problem = _scope_problem(scope, keyword)
        if problem and (resource in SINGLE or resource in SEGMENTED or resource in SCOPES):
            raise RuleValueError(f"Invalid ACL rules: {where}: {problem}")
        if keyword in SINGLE:
            level = _access(node, f"{keyword} policy", keyword, where, _BASIC)
            single[keyword] = stronger(level, single[keyword])
        elif resource in SEGMENTED:
            for name, body, at in _objects(node, f"{keyword} rule", where):
                rule = _segment(keyword, name, body, at)
                if "namespace" in scope and resource == "node" and rule.policy is Access.WRITE:
                    raise RuleValueError(
                        f"Invalid {keyword} {_quote(name)}: {at}: node rules inside a namespace "
                        'block may only grant "read" or "deny"'
                    )
                segments.append(rule)
        elif resource in SCOPES:
            for name, body, at in _objects(node, f"{keyword} block", where):
                scopes.append(_scope_block(resource, keyword, name, body, at, scope))
        else:
            raise RuleValueError(f"Invalid ACL rules: {where}: unknown resource {keyword!r}")
    return PolicyRules(
        tuple(segments),
        acl=single["acl"],
        operator=single["operator"],
        mesh=single["mesh"],
        peering=single["peering"],
        keyring=single["keyring"],
        scopes=tuple(scopes),
    )


def parse_rules(text: str) -> PolicyRules:
    """Rules from Consul HCL or JSON (JSON when the text starts with ``{``); empty is no rules."""
    stripped = text.strip()
    if not stripped:
        return PolicyRules()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise RuleValueError(
                f"Failed to parse ACL rules: line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
        except RecursionError as exc:
            raise RuleValueError("Failed to parse ACL rules: nested too deeply") from exc
        if not isinstance(doc, dict):
            raise RuleValueError("Failed to parse ACL rules: the JSON document is not an object")
        try:
            node = _from_json(doc, "rules")
        except RecursionError as exc:
            raise RuleValueError("Failed to parse ACL rules: nested too deeply") from exc
        return _decode(node.entries)
    return _decode(tuple(_from_hcl_item(item) for item in parse_hcl(text)))
