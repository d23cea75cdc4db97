"""SPIFFE IDs of mesh services, built and parsed strictly.

A service's identity is ``spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>``
(Consul's ``connect.SpiffeIDService``). Intentions match on these paths, so a segment that
could carry a ``/`` would let one name pose as another: issue 10 minted
``spiffe://…/ns/a/b/dc/dc1/svc/probe`` from ``?ns=a/b``, and it slipped past a deny. Here
every segment is checked against one rule before an ID is built, and parsing accepts only
what building could have produced, so ``build(parse(x)) == x`` for every ``x`` accepted:

- trust domain: lowercase DNS name (labels ``[a-z0-9-]``, 1-63 each, 253 in all);
- namespace: lowercase DNS label (Kubernetes namespaces, 1-63);
- datacenter: ``[a-z0-9_-]``, 1-64 (Consul refuses other datacenter names);
- service: Consul's service identity rule ``[a-z0-9]([a-z0-9-_]*[a-z0-9])?``, up to 256.

Nothing is decoded: percent-encoding, ``..``, empty segments, a query, a fragment, userinfo, a
port, uppercase and non-ASCII are all refused (SPIFFE IDs have no escapes; a name needing one
is not a valid name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loom.ca.errors import CAError

MAX_URI_LENGTH = 2048  # the SPIFFE ID specification's limit

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DATACENTER = re.compile(r"^[a-z0-9_-]{1,64}$")
_SERVICE = re.compile(r"^[a-z0-9]([a-z0-9\-_]*[a-z0-9])?$")
_SERVICE_MAX = 256


class SpiffeError(CAError):
    """A SPIFFE ID, or one of its parts, is not one Loom would issue."""


def _check(kind: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise SpiffeError(f"SPIFFE ID: {kind} is empty")
    if not value.isascii():
        raise SpiffeError(f"SPIFFE ID: {kind} {value!r} is not ASCII")
    if kind == "trust domain":
        labels = value.split(".")
        if len(value) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
            raise SpiffeError(f"SPIFFE ID: trust domain {value!r} is not a lowercase DNS name")
    elif kind == "namespace":
        if not _DNS_LABEL.match(value):
            raise SpiffeError(f"SPIFFE ID: namespace {value!r} is not a lowercase DNS label")
    elif kind == "datacenter":
        if not _DATACENTER.match(value):
            raise SpiffeError(
                f"SPIFFE ID: datacenter {value!r} may only hold lowercase letters, digits, '-', '_'"
            )
    elif len(value) > _SERVICE_MAX or not _SERVICE.match(value):
        raise SpiffeError(
            f"SPIFFE ID: service {value!r} has an invalid name. "
            "Only lowercase alphanumeric characters, '-' and '_' are allowed"
        )


def check_trust_domain(value: str) -> str:
    """``value`` when it is a trust domain Loom would issue for (``SpiffeError`` if not)."""
    _check("trust domain", value)
    return value


@dataclass(frozen=True)
class SpiffeId:
    """A service identity; construct with ``SpiffeId.of`` (checked) or ``parse_spiffe_id``."""

    trust_domain: str
    namespace: str
    datacenter: str
    service: str

    @classmethod
    def of(cls, trust_domain: str, namespace: str, datacenter: str, service: str) -> SpiffeId:
        """A checked ID: every segment valid, or ``SpiffeError`` naming the bad one."""
        _check("trust domain", trust_domain)
        _check("namespace", namespace)
        _check("datacenter", datacenter)
        _check("service", service)
        return cls(trust_domain, namespace, datacenter, service)

    @property
    def uri(self) -> str:
        return (
            f"spiffe://{self.trust_domain}/ns/{self.namespace}"
            f"/dc/{self.datacenter}/svc/{self.service}"
        )

    def __str__(self) -> str:
        return self.uri


def build_spiffe_id(trust_domain: str, namespace: str, datacenter: str, service: str) -> str:
    """The URI of a service identity, after checking every segment."""
    return SpiffeId.of(trust_domain, namespace, datacenter, service).uri


def parse_spiffe_id(uri: str) -> SpiffeId:
    """The service identity of a URI; what ``build_spiffe_id`` cannot produce is refused."""
    if not isinstance(uri, str):
        raise SpiffeError("SPIFFE ID: not a string")
    if len(uri) > MAX_URI_LENGTH:
        raise SpiffeError(f"SPIFFE ID: longer than {MAX_URI_LENGTH} characters")
    if not uri.isascii():
        raise SpiffeError("SPIFFE ID: not ASCII")
    scheme = "spiffe://"
    if not uri.startswith(scheme):
        raise SpiffeError(f"SPIFFE ID: {uri[:40]!r} does not start with {scheme!r}")
    for char, what in (
        ("%", "percent-encoding"),
        ("?", "a query"),
        ("#", "a fragment"),
        ("@", "userinfo"),
        (":", "a port"),
        ("\\", "a backslash"),
    ):
        if char in uri[len(scheme) :]:
            raise SpiffeError(f"SPIFFE ID: {what} is not allowed")
    trust_domain, sep, path = uri[len(scheme) :].partition("/")
    if not sep:
        raise SpiffeError("SPIFFE ID: no path (a trust domain alone is not a service)")
    parts = path.split("/")
    if len(parts) != 6 or parts[0::2] != ["ns", "dc", "svc"]:
        raise SpiffeError("SPIFFE ID: path is not /ns/<namespace>/dc/<datacenter>/svc/<service>")
    return SpiffeId.of(trust_domain, parts[1], parts[3], parts[5])


def service_identity_in(uri: str, trust_domain: str) -> SpiffeId | None:
    """The service identity ``uri`` names within ``trust_domain``; None for anything else
    (another trust domain, not a service identity, or not one this CA could have issued)."""
    try:
        identity = parse_spiffe_id(uri)
    except SpiffeError:
        return None
    return identity if identity.trust_domain == trust_domain else None
