"""The ``kubernetes`` auth method, the pure half: its config, the TokenReview it sends, and what
the answer means.

Consul validates a pod's service-account JWT by asking the API server (a ``TokenReview`` with
the method's own ``ServiceAccountJWT`` as credential). The call itself is I/O and belongs to
the server's wiring; this module builds the request body and reads the response into the
binding-rule variables ``serviceaccount.namespace``, ``serviceaccount.name`` and
``serviceaccount.uid``. A review that is not ``authenticated``, carries an ``error``, or names
a user that is not ``system:serviceaccount:<namespace>:<name>`` with valid Kubernetes names
is refused: a token for a user, a node or a malformed account never becomes a service
identity. Consul then reads the ServiceAccount (a second call, made by the wiring): its
``consul.hashicorp.com/service-name`` annotation, when set, replaces ``serviceaccount.name``
(``with_service_name``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from loom.acl.errors import AclError
from loom.acl.wire import Fields

VARIABLES = ("serviceaccount.namespace", "serviceaccount.name", "serviceaccount.uid")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_SA_PREFIX = "system:serviceaccount:"


class KubernetesLoginRefused(AclError):
    """The API server did not vouch for the token as a service account's."""


@dataclass(frozen=True)
class KubernetesConfig:
    """The ``Config`` of a ``kubernetes`` auth method, fields named as Consul's."""

    host: str
    """``Host``: the API server's URL, ``https://`` (``http://`` only for a local test server)."""
    ca_cert: str = ""
    """``CACert``: PEM of the CA that signed the API server's certificate (empty: system CAs)."""
    service_account_jwt: str = ""
    """``ServiceAccountJWT``: the token Loom presents to call the TokenReview API."""

    @classmethod
    def from_json(cls, doc: object) -> KubernetesConfig:
        f = Fields("AuthMethod.Config", doc)
        config = cls(f.text("Host"), f.text("CACert"), f.text("ServiceAccountJWT"))
        f.done()
        url = urlsplit(config.host)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise f.error("Host", "must be the API server's URL, such as https://10.0.0.1:6443")
        if config.ca_cert:
            try:
                x509.load_pem_x509_certificates(config.ca_cert.encode())
            except ValueError as exc:
                raise f.error("CACert", "not a PEM certificate") from exc
        if not config.service_account_jwt:
            raise f.error("ServiceAccountJWT", "is required to call the TokenReview API")
        if not _JWT_SHAPE.match(config.service_account_jwt):
            raise f.error("ServiceAccountJWT", "is not a JWT")
        return config


def token_review_request(pod_jwt: str) -> dict[str, Any]:
    """The body to POST to ``/apis/authentication.k8s.io/v1/tokenreviews``."""
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": pod_jwt},
    }


def _get(doc: object, *path: str) -> object:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def login_variables(review: object) -> dict[str, str]:
    """The binding variables of an authenticated service account, from a TokenReview answer."""
    if _get(review, "kind") != "TokenReview":
        raise KubernetesLoginRefused("kubernetes: the answer is not a TokenReview")
    error = _get(review, "status", "error")
    if error:
        raise KubernetesLoginRefused(f"kubernetes: token review failed: {str(error)[:200]!r}")
    if _get(review, "status", "authenticated") is not True:
        raise KubernetesLoginRefused("kubernetes: the API server did not authenticate the token")
    username = _get(review, "status", "user", "username")
    uid = _get(review, "status", "user", "uid")
    if not isinstance(username, str) or not username.startswith(_SA_PREFIX):
        raise KubernetesLoginRefused("kubernetes: the token is not a service account's")
    parts = username[len(_SA_PREFIX) :].split(":")
    if len(parts) != 2 or not _DNS_LABEL.match(parts[0]) or not _DNS_SUBDOMAIN.match(parts[1]):
        raise KubernetesLoginRefused(
            f"kubernetes: {username[:300]!r} is not system:serviceaccount:<namespace>:<name>"
        )
    if not isinstance(uid, str) or not uid:
        raise KubernetesLoginRefused("kubernetes: the reviewed user has no uid")
    namespace, name = parts
    return {
        "serviceaccount.namespace": namespace,
        "serviceaccount.name": name,
        "serviceaccount.uid": uid,
    }


SERVICE_NAME_ANNOTATION = "consul.hashicorp.com/service-name"


def with_service_name(vars: Mapping[str, str], account: object) -> dict[str, str]:
    """``vars`` with ``serviceaccount.name`` from the ServiceAccount's
    ``consul.hashicorp.com/service-name`` annotation when it has one (Consul's override)."""
    out = dict(vars)
    if _get(account, "kind") not in (None, "ServiceAccount"):
        raise KubernetesLoginRefused(
            "kubernetes: the annotation lookup did not answer a ServiceAccount"
        )
    annotations = _get(account, "metadata", "annotations")
    if isinstance(annotations, Mapping):
        name = annotations.get(SERVICE_NAME_ANNOTATION)
        if isinstance(name, str):
            out["serviceaccount.name"] = name
    return out
