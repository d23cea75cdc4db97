"""Consul Enterprise's namespace and partition blocks: parsing, validation and decisions.

Every decision table runs on the HCL text and on the same rules in Consul's JSON form, so the
two forms cannot drift apart. The namespaces are Loom's (tokens live in ``default``); the one
partition is ``default``.
"""

from __future__ import annotations

import json

import pytest

from loom.acl.authorizer import Authorizer
from loom.acl.errors import AclError
from loom.acl.rules import Access, parse_rules

R, W = Access.READ, Access.WRITE

TEAM_HCL = 'namespace "team" { service_prefix "" { policy = "write" } }'
TEAM_JSON = {"namespace": {"team": {"service_prefix": {"": {"policy": "write"}}}}}

LAYERED_HCL = """
service "web" { policy = "write" }
key_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
namespace_prefix "" {
  service_prefix "" { policy = "read" }
}
namespace_prefix "te" {
  service "api" { policy = "write" }
}
namespace "team" {
  service "db" { policy = "write" intentions = "write" }
  key_prefix "" { policy = "write" }
  acl = "write"
  node_prefix "" { policy = "deny" }
}
partition "default" {
  namespace "ops" { service_prefix "" { policy = "write" } }
}
partition "other" {
  namespace "team" { service "secret" { policy = "write" } }
  service "secret" { policy = "write" }
}
partition_prefix "" {
  namespace "nowhere" { service_prefix "" { policy = "write" } }
}
"""

LAYERED_JSON = {
    "service": {"web": {"policy": "write"}},
    "key_prefix": {"": {"policy": "read"}},
    "node_prefix": {"": {"policy": "read"}},
    "namespace_prefix": {
        "": {"service_prefix": {"": {"policy": "read"}}},
        "te": {"service": {"api": {"policy": "write"}}},
    },
    "namespace": {
        "team": {
            "service": {"db": {"policy": "write", "intentions": "write"}},
            "key_prefix": {"": {"policy": "write"}},
            "acl": "write",
            "node_prefix": {"": {"policy": "deny"}},
        }
    },
    "partition": [
        {"default": {"namespace": {"ops": {"service_prefix": {"": {"policy": "write"}}}}}},
        {
            "other": {
                "namespace": {"team": {"service": {"secret": {"policy": "write"}}}},
                "service": {"secret": {"policy": "write"}},
            }
        },
    ],
    "partition_prefix": {
        "": {"namespace": {"nowhere": {"service_prefix": {"": {"policy": "write"}}}}}
    },
}


def both(hcl: str, doc: object) -> list[Authorizer]:
    return [
        Authorizer([parse_rules(text)], default_allow=False, accessor_id="a-1")
        for text in (hcl, json.dumps(doc))
    ]


@pytest.mark.parametrize("authz", both(TEAM_HCL, TEAM_JSON), ids=["hcl", "json"])
def test_a_namespace_block_grants_only_inside_its_namespace(authz: Authorizer) -> None:
    assert authz.in_namespace("team").service_write("anything")
    assert not authz.service_write("anything")  # the token's own namespace: default
    assert not authz.in_namespace("default").service_write("anything")
    assert not authz.in_namespace("team2").service_write("anything")
    assert not authz.in_namespace("tea").service_write("anything")


@pytest.mark.parametrize(
    ("namespace", "resource", "access", "name", "allowed"),
    [
        # rules outside any block: the token's namespace, default
        ("default", "service", W, "web", True),
        ("team", "service", W, "web", False),
        # namespace_prefix "" reaches default too, and every namespace without a better block
        ("default", "service", R, "x", True),
        ("elsewhere", "service", R, "x", True),
        ("elsewhere", "service", W, "api", False),
        # the longest prefix wins over the empty one ...
        ("tesla", "service", W, "api", True),
        ("tesla", "service", R, "x", False),
        # ... and the exact block beats every prefix
        ("team", "service", W, "db", True),
        ("team", "service", W, "api", False),
        ("team", "service", R, "x", False),
        ("team", "intention", W, "db", True),
        # keys, ACLs: Loom keeps them outside namespaces, so only the token's own rules count
        ("team", "key", W, "k", False),
        ("team", "key", R, "k", True),
        ("team", "acl", W, "", False),
        ("default", "acl", W, "", False),
        # nodes: the token's rules, merged with the block's (deny beats read)
        ("team", "node", R, "n1", False),
        ("elsewhere", "node", R, "n1", True),
        # partition "default" applies, with its namespace blocks
        ("ops", "service", W, "anything", True),
        # another partition grants nothing here; its prefix block loses to the exact default
        ("team", "service", W, "secret", False),
        ("default", "service", W, "secret", False),
        ("nowhere", "service", W, "x", False),
    ],
)
def test_namespace_and_partition_blocks_decide_as_consul_does(
    namespace: str, resource: str, access: Access, name: str, allowed: bool
) -> None:
    for authz in both(LAYERED_HCL, LAYERED_JSON):
        assert authz.in_namespace(namespace).allowed(resource, access, name) is allowed


def test_a_partition_prefix_block_applies_when_no_exact_partition_block_exists() -> None:
    for authz in both(
        'partition_prefix "def" { namespace "team" { service "x" { policy = "write" } } }',
        {
            "partition_prefix": {
                "def": {"namespace": {"team": {"service": {"x": {"policy": "write"}}}}}
            }
        },
    ):
        assert authz.in_namespace("team").service_write("x")
        assert not authz.service_write("x")


def test_a_deny_in_one_policys_block_beats_a_write_in_anothers() -> None:
    authz = Authorizer(
        [
            parse_rules('namespace "team" { service "x" { policy = "write" } }'),
            parse_rules('namespace "team" { service "x" { policy = "deny" } }'),
        ],
        default_allow=True,
    )
    assert not authz.in_namespace("team").service_read("x")


def test_default_allow_still_decides_what_no_block_speaks_of() -> None:
    authz = Authorizer([parse_rules(TEAM_HCL)], default_allow=True)
    assert authz.in_namespace("other").service_write("x")
    assert not authz.in_namespace("team").acl_write()


@pytest.mark.parametrize("namespace", ["*", "team/x", "team/", "", "TEAM", "team "])
def test_odd_namespace_names_never_reach_a_block_for_another(namespace: str) -> None:
    authz = Authorizer([parse_rules(TEAM_HCL)], default_allow=False)
    assert not authz.in_namespace(namespace).service_write("x")


def test_star_and_slash_in_a_block_name_are_literal_not_wildcards() -> None:
    authz = Authorizer(
        [
            parse_rules(
                'namespace "*" { service_prefix "" { policy = "write" } }\n'
                'namespace "team/x" { service_prefix "" { policy = "write" } }\n'
                'namespace "" { service_prefix "" { policy = "write" } }'
            )
        ],
        default_allow=False,
    )
    for namespace in ("team", "default", "x", ""):
        assert not authz.in_namespace(namespace).service_write("x")


def test_views_are_kept_and_bounded() -> None:
    authz = Authorizer([parse_rules(TEAM_HCL)], default_allow=False)
    assert authz.in_namespace("team") is authz.in_namespace("team")
    assert authz.in_namespace("") is authz.in_namespace("default") is authz
    for i in range(1000):
        authz.in_namespace(f"ns{i}")
    assert len(authz._views) <= 256
    assert authz.in_namespace("team").service_write("x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'namespace "a" { namespace "b" { service "x" { policy = "read" } } }',
            "a namespace block is not allowed inside a namespace block",
        ),
        (
            'namespace "a" { namespace_prefix "" { } }',
            "a namespace_prefix block is not allowed inside a namespace block",
        ),
        (
            'namespace "a" { operator = "read" }',
            "operator rules are not allowed inside a namespace",
        ),
        ('namespace "a" { keyring = "read" }', "keyring rules are not allowed"),
        ('namespace "a" { mesh = "write" }', "mesh rules are not allowed"),
        ('namespace_prefix "" { query_prefix "" { policy = "read" } }', "query_prefix rules"),
        ('namespace "a" { event "e" { policy = "read" } }', "event rules are not allowed"),
        ('namespace "a" { partition "p" { } }', "a partition block is not allowed"),
        (
            'partition "p" { partition "q" { } }',
            "a partition block is not allowed inside a partition",
        ),
        (
            'partition "p" { namespace "a" { operator = "write" } }',
            "inside a namespace block (partition > namespace)",
        ),
        ('namespace "a" { node "n" { policy = "write" } }', 'may only grant "read" or "deny"'),
        ('namespace "a" = "write"', "'namespace' with a label needs a block"),
        ('{"namespace": {"a": "write"}}', "expected a block, found a string"),
        (
            '{"namespace": {"a": {"operator": "read"}}}',
            "rules.namespace.a.operator: operator rules",
        ),
        ('namespace "a" { servce "x" { policy = "read" } }', "unknown resource 'servce'"),
    ],
)
def test_invalid_nesting_is_an_error_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(AclError) as caught:  # RuleValueError, or RuleSyntaxError for HCL
        parse_rules(text)
    assert message in str(caught.value)


def test_acl_session_and_read_only_node_rules_are_allowed_in_a_namespace() -> None:
    rules = parse_rules(
        'namespace "a" { acl = "write" key_prefix "" { policy = "write" }\n'
        'session_prefix "" { policy = "write" } node_prefix "" { policy = "read" } }'
    )
    (block,) = rules.scopes
    assert (block.kind, block.name, block.prefix, block.rules.acl) == ("namespace", "a", False, W)


@pytest.mark.parametrize("text", [LAYERED_HCL, json.dumps(LAYERED_JSON)])
def test_blocks_print_back_to_rules_that_parse_the_same(text: str) -> None:
    rules = parse_rules(text)
    assert parse_rules(rules.to_hcl()) == rules
    assert parse_rules(rules.to_json()).to_json() == rules.to_json()


def test_a_block_naming_default_grants_keys_but_one_for_team_does_not() -> None:
    authz = Authorizer(
        [parse_rules('namespace_prefix "" { key_prefix "" { policy = "write" } }')],
        default_allow=False,
    )
    assert authz.key_write("k")
    assert not authz.in_namespace("team").key_write("k")
