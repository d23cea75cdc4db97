"""A jwt method's remote key source, pure: which fields name it, what the rest of the config
is, Consul's refusals of mixed sources, a discovery document whose issuer is not its URL,
and a token of another issuer."""

from __future__ import annotations

import pytest

from loom.acl.jwt import JwtClaimRefused, JwtConfigError
from loom.acl.jwtremote import RemoteKeys, check_issuer, read_discovery, split_remote


def test_a_jwks_url_is_split_from_the_rest_of_the_config_case_insensitively() -> None:
    remote, rest = split_remote({"jwksurl": "https://idp/keys", "BoundAudiences": ["a"]})
    assert remote == RemoteKeys("jwks", "https://idp/keys")
    assert rest == {"BoundAudiences": ["a"]}
    assert split_remote({"BoundAudiences": ["a"]}) == (None, {"BoundAudiences": ["a"]})


def test_oidc_discovery_fetches_the_well_known_document_first() -> None:
    remote, _ = split_remote({"OIDCDiscoveryURL": "https://idp/realm/"})
    assert remote is not None and remote.kind == "oidc"
    assert remote.first_url == "https://idp/realm/.well-known/openid-configuration"


def test_a_discovery_document_must_name_its_own_url_as_issuer() -> None:
    remote = RemoteKeys("oidc", "https://idp")
    doc = b'{"issuer": "https://idp", "jwks_uri": "https://idp/keys"}'
    assert read_discovery(doc, remote) == ("https://idp", "https://idp/keys")
    with pytest.raises(JwtConfigError, match="issuer did not match"):
        read_discovery(b'{"issuer": "https://evil", "jwks_uri": "https://idp/keys"}', remote)
    with pytest.raises(JwtConfigError, match="not an http"):
        read_discovery(b'{"issuer": "https://idp", "jwks_uri": "file:///etc/passwd"}', remote)
    with pytest.raises(JwtConfigError, match="not JSON"):
        read_discovery(b"\xff", remote)


def test_a_token_of_another_issuer_is_refused() -> None:
    check_issuer({"iss": "https://idp"}, "https://idp")
    with pytest.raises(JwtClaimRefused, match="different provider"):
        check_issuer({"iss": "https://idp.evil"}, "https://idp")
    with pytest.raises(JwtClaimRefused):
        check_issuer({}, "https://idp")


@pytest.mark.parametrize(
    "config",
    [
        {"JWKSURL": "https://a", "OIDCDiscoveryURL": "https://b"},
        {"JWKSURL": "https://a", "JWTValidationPubKeys": ["pem"]},
        {"OIDCDiscoveryURL": "https://a", "JWKSFile": "/k.json"},
        {"JWKSURL": 7},
        {"JWKSURL": "ftp://a/keys"},
    ],
)
def test_mixed_or_malformed_sources_are_refused(config: dict[str, object]) -> None:
    with pytest.raises(JwtConfigError):
        split_remote(config)
