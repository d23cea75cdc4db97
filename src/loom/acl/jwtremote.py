"""Where a ``jwt`` method's keys come from when they are not in its config: ``JWKSURL`` or
``OIDCDiscoveryURL`` (Consul's fields), each with an optional CA bundle to trust.

Consul's ``jwt`` method (go-sso's ``oidcauth`` config) takes its keys from exactly one of
``JWTValidationPubKeys``, ``JWKSURL`` (a JWKS document fetched over HTTP(S)) and
``OIDCDiscoveryURL`` (an OpenID provider: ``<url>/.well-known/openid-configuration`` names
the issuer and its ``jwks_uri``). ``JWKSCACert`` / ``OIDCDiscoveryCACert`` are PEM CA
certificates the fetch trusts instead of the system's. This module reads and checks those
fields (``split_remote``), reads a discovery document (``read_discovery``: its ``issuer``
must be the URL itself, as go-oidc requires), and checks a token's ``iss`` against the
discovered issuer (``check_issuer``), since go-oidc's verifier does. Fetching is I/O and lives
in ``loom.control.jwks``; nothing here opens a socket.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509

from loom.acl.jwt import JwtClaimRefused, JwtConfigError

JWKS_URL = "JWKSURL"
JWKS_CA = "JWKSCACert"
OIDC_URL = "OIDCDiscoveryURL"
OIDC_CA = "OIDCDiscoveryCACert"
_FIELDS = (JWKS_URL, JWKS_CA, OIDC_URL, OIDC_CA)
_ONE_SOURCE = "exactly one of 'JWKSURL', 'JWTValidationPubKeys', or 'OIDCDiscoveryURL' must be set"
WELL_KNOWN = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class RemoteKeys:
    """A method's remote key source: a JWKS URL, or an OIDC provider to discover."""

    kind: Literal["jwks", "oidc"]
    url: str
    ca_pem: str = ""
    """PEM CA certificates to trust for the fetch; empty: the system's trust store."""

    @property
    def first_url(self) -> str:
        """What is fetched first: the JWKS, or the provider's discovery document."""
        return self.url if self.kind == "jwks" else self.url.rstrip("/") + WELL_KNOWN


def _check_url(field: str, url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise JwtConfigError(f"AuthMethod.Config: field '{field}': {url!r} is not an http(s) URL")
    if parsed.username or parsed.password:
        raise JwtConfigError(f"AuthMethod.Config: field '{field}': no credentials in the URL")
    return url


def _check_ca(field: str, pem: str) -> str:
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise JwtConfigError(
            f"AuthMethod.Config: field '{field}': not PEM certificates ({exc})"
        ) from None
    if not certs:
        raise JwtConfigError(f"AuthMethod.Config: field '{field}': no certificate")
    return pem


def split_remote(config: Mapping[str, Any]) -> tuple[RemoteKeys | None, dict[str, Any]]:
    """The remote key source a config names (None: none) and the rest of the config (for
    ``JwtConfig.from_json``); ``JwtConfigError`` in Consul's words when the fields clash."""
    rest = dict(config)
    given: dict[str, str] = {}
    for key in list(rest):
        for name in _FIELDS:
            if key.lower() == name.lower():
                value = rest.pop(key)
                if value in (None, ""):
                    continue
                if not isinstance(value, str):
                    raise JwtConfigError(f"AuthMethod.Config: field '{name}': expected a string")
                given[name] = value
    if JWKS_CA in given and JWKS_URL not in given:
        raise JwtConfigError(
            "AuthMethod.Config: 'JWKSCACert' should not be set unless 'JWKSURL' is set"
        )
    if OIDC_CA in given and OIDC_URL not in given:
        raise JwtConfigError("AuthMethod.Config: 'OIDCDiscoveryCACert' should not be set unless "
                             "'OIDCDiscoveryURL' is set")  # fmt: skip
    if JWKS_URL not in given and OIDC_URL not in given:
        return None, rest
    static = [k for k in rest if k.lower() in ("jwtvalidationpubkeys", "jwksfile") and rest[k]]
    if (JWKS_URL in given and OIDC_URL in given) or static:
        raise JwtConfigError(f"AuthMethod.Config: {_ONE_SOURCE}")
    if JWKS_URL in given:
        url = _check_url(JWKS_URL, given[JWKS_URL])
        return RemoteKeys("jwks", url, _check_ca(JWKS_CA, given.get(JWKS_CA, "")) if
                          JWKS_CA in given else ""), rest  # fmt: skip
    url = _check_url(OIDC_URL, given[OIDC_URL])
    ca = _check_ca(OIDC_CA, given[OIDC_CA]) if OIDC_CA in given else ""
    return RemoteKeys("oidc", url, ca), rest


def read_discovery(body: bytes, remote: RemoteKeys) -> tuple[str, str]:
    """The ``issuer`` and ``jwks_uri`` of a provider's discovery document; ``JwtConfigError``
    when it is not one, or names another issuer than the URL it was fetched from."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JwtConfigError(f"oidc: discovery document at {remote.first_url} is not JSON") from exc
    if not isinstance(doc, dict):
        raise JwtConfigError(f"oidc: discovery document at {remote.first_url} is not an object")
    issuer, jwks_uri = doc.get("issuer"), doc.get("jwks_uri")
    if not isinstance(issuer, str) or not isinstance(jwks_uri, str):
        raise JwtConfigError("oidc: discovery document without 'issuer' and 'jwks_uri'")
    if issuer != remote.url:
        raise JwtConfigError(
            f"oidc: issuer did not match the issuer returned by provider, expected "
            f"{remote.url!r} got {issuer!r}"
        )
    return issuer, _check_url("jwks_uri", jwks_uri)


def check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    """A token verified with a discovered provider's keys must be that provider's."""
    if claims.get("iss") != issuer:
        raise JwtClaimRefused(f"jwt: id token issued by a different provider, expected "
                              f"{issuer!r} got {claims.get('iss')!r}")  # fmt: skip


__all__ = ["RemoteKeys", "check_issuer", "read_discovery", "split_remote"]
