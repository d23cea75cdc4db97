"""The rules of a token's policies, merged, answering "may this token do X on Y?" as Consul does.

Consul's semantics, followed exactly (``acl/policy_merger.go``, ``policy_authorizer.go``,
``static_authorizer.go``, ``chained_authorizer.go``):

- **Merge.** Rules of all policies for the same resource, form (exact or prefix) and name
  merge into one: ``deny`` beats ``write`` beats ``list`` beats ``read``. A service rule's
  ``intentions`` level merges the same way, separately from its ``policy``.
- **Match.** An exact rule for the name wins; otherwise the longest prefix rule that the name
  starts with (the empty prefix matches everything).
- **Levels.** ``write`` grants write, list and read; ``list`` grants list and read; ``read``
  grants read; ``deny`` grants nothing.
- **Intentions** on a service are the rule's ``intentions`` level, or when it has none ``read``
  if the service policy is ``read``/``write`` and ``deny`` if it is ``deny``.
- **mesh** and **peering** fall back to **operator** when the token has no rule for them.
- **Default.** What no rule decides goes to the default policy: with ``allow`` everything is
  allowed except ``acl:read``/``acl:write`` (Consul keeps ACL management behind explicit
  rules even then); with ``deny`` everything is refused.

- **Namespaces** (Consul Enterprise's blocks). An ``Authorizer`` answers for one namespace,
  ``namespace`` (the token's own, ``default``, unless made with ``in_namespace``). Rules
  outside any block apply in the token's namespace; a ``namespace``/``namespace_prefix`` block
  applies in the namespaces it names, the exact block beating prefixes and the longest prefix
  beating shorter ones; Loom's one partition is ``default``, so of the ``partition`` blocks the
  one for ``default`` applies (else the longest matching prefix) and the rest grant nothing.
  In another namespace than the token's, only ``service`` (with its intentions) and ``node``
  (read, as Consul allows there) come from the namespace's block; every resource Loom does not
  keep per namespace (keys, sessions, ACLs, agent, operator...) is decided by the token's own
  rules alone, so ``?ns=`` never widens what a token may do to them.

Wildcard questions (``intention_read("*")``, ``service_read_all``...) use Consul's any/all walks
over every rule. ``describe``/``check`` word a refusal exactly as Consul's error does.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from loom.acl.errors import PermissionDenied
from loom.acl.rules import SEGMENTED, SINGLE, Access, PolicyRules, ScopeRule, stronger

HOME = "default"
"""The namespace and partition every token and policy lives in (Loom's ACL records have no
other), so the one where rules outside any block apply."""
_PER_NAMESPACE = frozenset({"service", "node"})
"""What a namespace block decides in its namespace (intentions come with service rules)."""
_NOT_PER_NAMESPACE = frozenset({*SEGMENTED, *SINGLE} - {"service"})
"""What the token's own rules decide in every namespace (node: merged with the block's)."""
_VIEWS_MAX = 256


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    DEFAULT = "default"  # no rule decided: ask the next authorizer (in the end, the default)


def enforce(rule: Access | None, required: Access) -> Decision:
    """What a rule at level ``rule`` says about an action needing ``required``."""
    if rule is None:
        return Decision.DEFAULT
    if rule is Access.WRITE:
        return Decision.ALLOW
    if rule is Access.LIST:
        return Decision.ALLOW if required in (Access.LIST, Access.READ) else Decision.DENY
    if rule is Access.READ:
        return Decision.ALLOW if required is Access.READ else Decision.DENY
    return Decision.DENY


@dataclass
class _Leaf:
    exact: Access | None = None
    prefix: Access | None = None


class RuleTree:
    """Exact and prefix rules of one resource, keyed by name (Consul keeps a radix tree)."""

    def __init__(self) -> None:
        self.leaves: dict[str, _Leaf] = {}

    def put(self, name: str, prefix: bool, access: Access) -> None:
        leaf = self.leaves.setdefault(name, _Leaf())
        if prefix:
            leaf.prefix = access
        else:
            leaf.exact = access

    def lookup(self, name: str) -> Access | None:
        """The level of the exact rule for ``name``, else of the longest matching prefix."""
        leaf = self.leaves.get(name)
        if leaf is not None and leaf.exact is not None:
            return leaf.exact
        for end in range(len(name), -1, -1):
            leaf = self.leaves.get(name[:end])
            if leaf is not None and leaf.prefix is not None:
                return leaf.prefix
        return None

    def any_allowed(self, required: Access) -> Decision:
        """Allow if some rule would allow ``required`` on some name (Consul's anyAllowed)."""
        decision = Decision.DEFAULT
        root = self.leaves.get("")
        if root is not None:
            decision = enforce(root.prefix, required)
            if decision is Decision.ALLOW:
                return decision
        for leaf in self.leaves.values():
            found = enforce(leaf.prefix, required)
            if found is not Decision.ALLOW and leaf.exact is not None:
                found = enforce(leaf.exact, required)
            if found is Decision.ALLOW:
                return Decision.ALLOW
        return decision

    def all_allowed(self, required: Access) -> Decision:
        """Deny if some rule would refuse ``required`` on some name (Consul's allAllowed)."""
        decision = Decision.DEFAULT
        root = self.leaves.get("")
        if root is not None:
            decision = enforce(root.prefix, required)
            if decision is Decision.DENY:
                return decision
        for leaf in self.leaves.values():
            found = enforce(leaf.prefix, required)
            if found is not Decision.DENY and leaf.exact is not None:
                exact = enforce(leaf.exact, required)
                found = found if exact is Decision.DEFAULT else exact
            if found is Decision.DENY:
                return Decision.DENY
        return decision


def _chosen(blocks: list[ScopeRule], name: str) -> list[ScopeRule]:
    """The blocks that apply to ``name``: every exact one for it, else every prefix one of the
    longest prefix ``name`` starts with (several policies may each have one; they merge)."""
    exact = [b for b in blocks if not b.prefix and b.name == name]
    if exact:
        return exact
    lengths = [len(b.name) for b in blocks if b.prefix and name.startswith(b.name)]
    if not lengths:
        return []
    longest = max(lengths)
    return [b for b in blocks if b.prefix and len(b.name) == longest and name.startswith(b.name)]


def rules_in(policies: Iterable[PolicyRules], namespace: str) -> list[PolicyRules]:
    """The flat rules (no blocks) that decide in ``namespace`` of partition ``default``."""
    tops = list(policies)
    partitions = [s for p in tops for s in p.scopes if s.kind == "partition"]
    levels = tops + [s.rules for s in _chosen(partitions, HOME)]
    blocks = [s for level in levels for s in level.scopes if s.kind == "namespace"]
    inside = [b.rules for b in _chosen(blocks, namespace)]
    if namespace == HOME:
        return [level.only(_NOT_PER_NAMESPACE | {"service"}) for level in levels] + inside
    return [level.only(_NOT_PER_NAMESPACE) for level in levels] + [
        rules.only(_PER_NAMESPACE) for rules in inside
    ]


def _intention_default(policy: Access) -> Access:
    return Access.READ if policy in (Access.READ, Access.WRITE) else Access.DENY


class Authorizer:
    """Answers permission questions for one token; build with ``Authorizer(rules, ...)``.

    ``rules`` are the parsed rules of every policy that applies to the token (its policies,
    its roles' policies, the policies synthesized for its identities). ``accessor_id`` only
    names the token in refusals. ``namespace`` is where this one decides; ``in_namespace``
    gives the same token's answers in another.
    """

    def __init__(
        self,
        rules: Iterable[PolicyRules],
        *,
        default_allow: bool,
        accessor_id: str = "",
        namespace: str = HOME,
        views: dict[str, Authorizer] | None = None,
    ) -> None:
        self.default_allow = default_allow
        self.accessor_id = accessor_id
        self.namespace = namespace
        self.policies = tuple(rules)
        self._views = views if views is not None else {}
        self._views.setdefault(namespace, self)
        merged: dict[tuple[str, bool, str], tuple[Access, Access | None]] = {}
        single: dict[str, Access | None] = {}
        for policy in rules_in(self.policies, namespace):
            for name in ("acl", "operator", "mesh", "peering", "keyring"):
                single[name] = stronger(policy.single(name), single.get(name))
            for rule in policy.segments:
                key = (rule.resource, rule.prefix, rule.name)
                if key in merged:
                    old_policy, old_intentions = merged[key]
                    merged[key] = (
                        stronger(rule.policy, old_policy) or rule.policy,
                        stronger(rule.intentions, old_intentions),
                    )
                else:
                    merged[key] = (rule.policy, rule.intentions)
        self.single = single
        self.trees = {resource: RuleTree() for resource in (*SEGMENTED, "intention")}
        for (resource, prefix, name), (level, intentions) in merged.items():
            self.trees[resource].put(name, prefix, level)
            if resource == "service":
                self.trees["intention"].put(name, prefix, intentions or _intention_default(level))

    def in_namespace(self, namespace: str) -> Authorizer:
        """This token's authorizer for resources in ``namespace`` (empty: ``default``); made
        once per namespace and kept with this one (a bounded number of them)."""
        namespace = namespace or HOME
        found = self._views.get(namespace)
        if found is None:
            if len(self._views) >= _VIEWS_MAX:  # ?ns= is the caller's: never grow unbounded
                home = self._views.get(HOME)
                self._views.clear()
                if home is not None:
                    self._views[HOME] = home
            found = Authorizer(
                self.policies,
                default_allow=self.default_allow,
                accessor_id=self.accessor_id,
                namespace=namespace,
                views=self._views,
            )
        return found

    # -- decisions --------------------------------------------------------------------------

    def decide(self, resource: str, access: Access, name: str = "") -> Decision:
        """The policy layer's own decision (``DEFAULT`` when no rule speaks)."""
        access = Access(access)  # a plain "write" from a caller compares by identity below
        if resource in ("mesh", "peering"):
            own = enforce(self.single.get(resource), access)
            return own if own is not Decision.DEFAULT else self.decide("operator", access)
        if resource in ("acl", "operator", "keyring"):
            return enforce(self.single.get(resource), access)
        tree = self.trees.get(resource)
        if tree is None:
            raise ValueError(f"unknown ACL resource {resource!r}")
        if resource == "intention" and name == "*":
            if access is Access.READ:
                return tree.any_allowed(access)
            return tree.all_allowed(access)
        return enforce(tree.lookup(name), access)

    def _default(self, resource: str) -> bool:
        return self.default_allow and resource != "acl"

    def allowed(self, resource: str, access: Access, name: str = "") -> bool:
        decision = self.decide(resource, access, name)
        if decision is Decision.DEFAULT:
            return self._default(resource)
        return decision is Decision.ALLOW

    def describe(self, resource: str, access: Access, name: str = "") -> str:
        """Consul's refusal text for this permission, whether or not it is refused."""
        return str(self.denial(resource, access, name))

    def denial(self, resource: str, access: Access, name: str = "") -> PermissionDenied:
        return PermissionDenied(
            accessor_id=self.accessor_id, resource=resource, access=str(access), name=name
        )

    def check(self, resource: str, access: Access, name: str = "") -> None:
        """Return if allowed; raise ``PermissionDenied`` naming the permission otherwise."""
        if not self.allowed(resource, access, name):
            raise self.denial(resource, access, name)

    # -- Consul's named questions ----------------------------------------------------------

    def service_read(self, name: str) -> bool:
        return self.allowed("service", Access.READ, name)

    def service_write(self, name: str) -> bool:
        return self.allowed("service", Access.WRITE, name)

    def intention_read(self, name: str) -> bool:
        return self.allowed("intention", Access.READ, name)

    def intention_write(self, name: str) -> bool:
        return self.allowed("intention", Access.WRITE, name)

    def node_read(self, name: str) -> bool:
        return self.allowed("node", Access.READ, name)

    def node_write(self, name: str) -> bool:
        return self.allowed("node", Access.WRITE, name)

    def key_read(self, key: str) -> bool:
        return self.allowed("key", Access.READ, key)

    def key_list(self, key: str) -> bool:
        return self.allowed("key", Access.LIST, key)

    def key_write(self, key: str) -> bool:
        return self.allowed("key", Access.WRITE, key)

    def agent_read(self, node: str) -> bool:
        return self.allowed("agent", Access.READ, node)

    def agent_write(self, node: str) -> bool:
        return self.allowed("agent", Access.WRITE, node)

    def session_read(self, node: str) -> bool:
        return self.allowed("session", Access.READ, node)

    def session_write(self, node: str) -> bool:
        return self.allowed("session", Access.WRITE, node)

    def event_read(self, name: str) -> bool:
        return self.allowed("event", Access.READ, name)

    def event_write(self, name: str) -> bool:
        return self.allowed("event", Access.WRITE, name)

    def query_read(self, name: str) -> bool:
        return self.allowed("query", Access.READ, name)

    def query_write(self, name: str) -> bool:
        return self.allowed("query", Access.WRITE, name)

    def operator_read(self) -> bool:
        return self.allowed("operator", Access.READ)

    def operator_write(self) -> bool:
        return self.allowed("operator", Access.WRITE)

    def acl_read(self) -> bool:
        return self.allowed("acl", Access.READ)

    def acl_write(self) -> bool:
        return self.allowed("acl", Access.WRITE)

    def mesh_read(self) -> bool:
        return self.allowed("mesh", Access.READ)

    def mesh_write(self) -> bool:
        return self.allowed("mesh", Access.WRITE)

    def peering_read(self) -> bool:
        return self.allowed("peering", Access.READ)

    def peering_write(self) -> bool:
        return self.allowed("peering", Access.WRITE)

    def keyring_read(self) -> bool:
        return self.allowed("keyring", Access.READ)

    def keyring_write(self) -> bool:
        return self.allowed("keyring", Access.WRITE)

    def _walk(self, decision: Decision, resource: str) -> bool:
        if decision is Decision.DEFAULT:
            return self._default(resource)
        return decision is Decision.ALLOW

    def service_read_all(self) -> bool:
        """May read every service: no rule anywhere refuses service:read."""
        return self._walk(self.trees["service"].all_allowed(Access.READ), "service")

    def node_read_all(self) -> bool:
        return self._walk(self.trees["node"].all_allowed(Access.READ), "node")

    def service_write_any(self) -> bool:
        """May write some service (Consul's test for "a locally authenticated service")."""
        return self._walk(self.trees["service"].any_allowed(Access.WRITE), "service")

    def key_write_prefix(self, prefix: str) -> bool:
        """May delete the whole tree under ``prefix`` (Consul's KeyWritePrefix)."""
        tree = self.trees["key"]
        base = Decision.DEFAULT
        for end in range(len(prefix) + 1):
            leaf = tree.leaves.get(prefix[:end])
            if leaf is not None and leaf.prefix is not None:
                base = Decision.ALLOW if leaf.prefix is Access.WRITE else Decision.DENY
        if base is Decision.DENY:
            return False
        for name, leaf in tree.leaves.items():
            if not name.startswith(prefix):
                continue
            if any(
                level is not None and level is not Access.WRITE
                for level in (leaf.prefix, leaf.exact)
            ):
                return False
        return self._walk(base, "key")

    def intention_default_allow(self) -> bool:
        """What traffic no intention matches gets: the ACL default policy (Consul's rule)."""
        return self.default_allow
