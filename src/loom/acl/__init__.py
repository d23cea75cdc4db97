"""Consul's ACL model as pure code: rules, policies, tokens, identities, auth methods.

Nothing here does I/O, asyncio or reads a clock: callers pass ``now`` and the ACL state in.
The server wires it in through ``loom.control.acl`` and ``loom.server.guard`` (see docs/acl.md).

Modules: ``rules`` (the rule language, HCL and JSON), ``authorizer`` (merged rules -> yes/no
with Consul's precedence), ``records`` (tokens, policies, roles, identities and their JSON
shapes; token -> Authorizer), ``binding`` (binding-rule selectors and bind names), ``jwt``
(the ``jwt`` auth method's token validation, and a signer). Every error is an ``AclError``.
"""
