"""Inputs shared by the ACL unit tests: one policy using every resource, in HCL and JSON."""

from __future__ import annotations

EVERY_RESOURCE_HCL = """
acl = "read"
agent "root" { policy = "read" }
agent_prefix "" { policy = "deny" }
event "deploy" { policy = "write" }
event_prefix "" { policy = "read" }
key "foo/bar" { policy = "write" }
key_prefix "foo/" { policy = "list" }
keyring = "deny"
mesh = "write"
node "n1" { policy = "write" }
node_prefix "" { policy = "read" }
operator = "read"
peering = "read"
query "q" { policy = "write" }
query_prefix "" { policy = "read" }
service "web" { policy = "write" intentions = "read" }
service_prefix "" { policy = "read" }
session "n1" { policy = "write" }
session_prefix "" { policy = "deny" }
"""

EVERY_RESOURCE_JSON = {
    "acl": "read",
    "agent": {"root": {"policy": "read"}},
    "agent_prefix": {"": {"policy": "deny"}},
    "event": {"deploy": {"policy": "write"}},
    "event_prefix": {"": {"policy": "read"}},
    "key": {"foo/bar": {"policy": "write"}},
    "key_prefix": {"foo/": {"policy": "list"}},
    "keyring": "deny",
    "mesh": "write",
    "node": {"n1": {"policy": "write"}},
    "node_prefix": {"": {"policy": "read"}},
    "operator": "read",
    "peering": "read",
    "query": {"q": {"policy": "write"}},
    "query_prefix": {"": {"policy": "read"}},
    "service": {"web": {"policy": "write", "intentions": "read"}},
    "service_prefix": {"": {"policy": "read"}},
    "session": {"n1": {"policy": "write"}},
    "session_prefix": {"": {"policy": "deny"}},
}
