"""The small pieces every ACL record shares: links, service and node identities, name rules.

Names are checked with Consul's own patterns (``acl/validation.go``): service and node
identities lowercase ``[a-z0-9]([a-z0-9-_]*[a-z0-9])?`` up to 256 characters (the same rule
binding rules apply to computed names), policy names up to 128 characters with at most one
``/``, role names up to 256, auth method names up to 128. IDs a client supplies must be UUIDs;
namespaces and partitions exist only in Consul Enterprise, so only the default ones are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from loom.acl.wire import Fields

IDENTITY_NAME = re.compile(r"^[a-z0-9]([a-z0-9\-_]*[a-z0-9])?$")
IDENTITY_NAME_MAX = 256
POLICY_NAME = re.compile(r"^[A-Za-z0-9\-_]+/?[A-Za-z0-9\-_]*$")
POLICY_NAME_MAX = 128
ROLE_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,256}$")
AUTH_METHOD_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")

# Fields Consul sends back on reads; accepted on input and ignored (the store owns them).
SERVER_FIELDS = frozenset({"Hash", "CreateIndex", "ModifyIndex"})
_CE_SCOPE = ("", "default")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def valid_identity_name(name: str) -> bool:
    """Consul's rule for service and node identity names (also bind names of those types)."""
    return len(name) <= IDENTITY_NAME_MAX and IDENTITY_NAME.match(name) is not None


def valid_policy_name(name: str) -> bool:
    return len(name) <= POLICY_NAME_MAX and POLICY_NAME.match(name) is not None


def valid_role_name(name: str) -> bool:
    return ROLE_NAME.match(name) is not None


def check_uuid(f: Fields, field: str, value: str) -> None:
    """IDs a client supplies must be UUIDs, as Consul requires (empty: the server picks one)."""
    if value and not UUID.match(value):
        raise f.error(field, f"{value!r} is not a valid UUID")


def check_scope(f: Fields) -> None:
    """Namespace and partition exist only in Consul Enterprise; CE accepts the default ones."""
    for name in ("Namespace", "Partition", "AuthMethodNamespace"):
        if f.text(name) not in _CE_SCOPE:
            raise f.error(name, 'namespaces and partitions are not supported (only "default")')


@dataclass(frozen=True)
class Link:
    """A token's or role's reference to a policy or role, by ID or by name."""

    id: str = ""
    name: str = ""

    @classmethod
    def from_json(cls, record: str, doc: object, where: str) -> Link:
        f = Fields(record, doc, where)
        link = cls(f.text("ID"), f.text("Name"))
        f.done()
        if not link.id and not link.name:
            raise f.error("", "a link needs an ID or a Name")
        return link

    def to_json(self) -> dict[str, str]:
        return {"ID": self.id, "Name": self.name}


@dataclass(frozen=True)
class ServiceIdentity:
    service_name: str
    datacenters: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, record: str, doc: object, where: str) -> ServiceIdentity:
        f = Fields(record, doc, where)
        ident = cls(f.text("ServiceName"), f.strings("Datacenters"))
        f.done()
        if not ident.service_name:
            raise f.error("ServiceName", "Service identity is missing the service name field")
        if not valid_identity_name(ident.service_name):
            raise f.error(
                "ServiceName",
                f"Service identity {ident.service_name!r} has an invalid name. "
                "Only lowercase alphanumeric characters, '-' and '_' are allowed",
            )
        return ident

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"ServiceName": self.service_name}
        if self.datacenters:
            doc["Datacenters"] = list(self.datacenters)
        return doc

    def applies_in(self, datacenter: str) -> bool:
        return not self.datacenters or datacenter in self.datacenters


@dataclass(frozen=True)
class NodeIdentity:
    node_name: str
    datacenter: str

    @classmethod
    def from_json(cls, record: str, doc: object, where: str) -> NodeIdentity:
        f = Fields(record, doc, where)
        ident = cls(f.text("NodeName"), f.text("Datacenter"))
        f.done()
        if not ident.node_name:
            raise f.error("NodeName", "Node identity is missing the node name field")
        if not valid_identity_name(ident.node_name):
            raise f.error(
                "NodeName",
                f"Node identity {ident.node_name!r} has an invalid name. "
                "Only lowercase alphanumeric characters, '-' and '_' are allowed",
            )
        if not ident.datacenter:
            raise f.error("Datacenter", "Node identity is missing the datacenter field")
        return ident

    def to_json(self) -> dict[str, str]:
        return {"NodeName": self.node_name, "Datacenter": self.datacenter}


def read_identities(
    f: Fields, record: str
) -> tuple[tuple[ServiceIdentity, ...], tuple[NodeIdentity, ...]]:
    services = tuple(
        ServiceIdentity.from_json(record, d, w) for w, d in f.objects("ServiceIdentities")
    )
    nodes = tuple(NodeIdentity.from_json(record, d, w) for w, d in f.objects("NodeIdentities"))
    return services, nodes
