"""The jwt auth method: real signatures with cryptography, and the attacks it must refuse.

Each supported algorithm is signed and verified for real (RS256, ES256, EdDSA). Next to the
user's token sit the attacker's: ``alg: none``, HS256 keyed with the RSA public key (alg
confusion), a signature from another key, a payload edited after signing, an expired or
not-yet-valid token, the wrong issuer or audience. Time rules follow go-sso's ``jwt.go``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.acl.binding import BindingRule, bind
from loom.acl.jwt import (
    JwtAlgorithmRefused,
    JwtClaimRefused,
    JwtConfig,
    JwtConfigError,
    JwtError,
    JwtExpired,
    JwtMalformed,
    JwtNotYetValid,
    JwtSignatureInvalid,
    JwtSigner,
    load_jwks,
    service_account_claims,
    verify,
)
from loom.acl.wire import RecordError

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
T = int(NOW.timestamp())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SIGNERS = {
    "RS256": JwtSigner(RSA_KEY),
    "ES256": JwtSigner(ec.generate_private_key(ec.SECP256R1())),
    "EdDSA": JwtSigner(ed25519.Ed25519PrivateKey.generate()),
}


def config(signer: JwtSigner = SIGNERS["RS256"], **extra: object) -> JwtConfig:
    doc = {
        "JWTValidationPubKeys": [signer.public_pem()],
        "BoundIssuer": "loom-local",
        "BoundAudiences": ["loom"],
        "ClaimMappings": {
            "/kubernetes.io/serviceaccount/name": "service_account",
            "/kubernetes.io/namespace": "namespace",
        },
        "ListClaimMappings": {"groups": "groups"},
        **extra,
    }
    return JwtConfig.from_json(doc)


def sa_claims(**change: object) -> dict[str, object]:
    claims = service_account_claims(
        namespace="default",
        name="web",
        uid="u1",
        issuer="loom-local",
        audiences=["loom"],
        now=NOW,
        ttl=dt.timedelta(minutes=10),
    )
    claims["groups"] = ["dev"]
    claims.update(change)
    return {k: v for k, v in claims.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", sorted(SIGNERS))
def test_a_token_signed_by_a_configured_key_verifies_and_maps_its_claims(alg: str) -> None:
    token = SIGNERS[alg].sign(sa_claims())
    got = verify(token, config(SIGNERS[alg]), NOW)
    assert got.vars == {
        "value.service_account": "web",
        "value.namespace": "default",
        "list.groups": ("dev",),
    }
    rules = [
        BindingRule(
            "r", "local", "service", "${value.service_account}", 'value.namespace == "default"'
        )
    ]
    assert (
        bind(rules, method="local", vars=got.vars, datacenter="dc1")
        .service_identities[0]
        .service_name
        == "web"
    )


def test_unsigned_tokens_are_refused() -> None:
    head = b64(json.dumps({"alg": "none"}).encode())
    body = b64(json.dumps(sa_claims()).encode())
    with pytest.raises(JwtAlgorithmRefused, match="alg none"):
        verify(f"{head}.{body}.", config(), NOW)
    with pytest.raises(JwtAlgorithmRefused):
        verify(f"{b64(json.dumps({'alg': 'NoNe'}).encode())}.{body}.", config(), NOW)


def test_hs256_keyed_with_the_rsa_public_key_is_refused() -> None:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(sa_claims()).encode())
    secret = SIGNERS["RS256"].public_pem().encode()
    sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(JwtAlgorithmRefused, match="HS256"):
        verify(f"{head}.{body}.{sig}", config(), NOW)


def test_an_algorithm_that_does_not_fit_the_key_is_refused() -> None:
    token = SIGNERS["ES256"].sign(sa_claims())
    with pytest.raises(JwtAlgorithmRefused, match="no configured key"):
        verify(token, config(SIGNERS["RS256"]), NOW)
    with pytest.raises(JwtAlgorithmRefused, match="not accepted"):
        verify(token, config(SIGNERS["ES256"], JWTSupportedAlgs=["RS256"]), NOW)


def test_a_signature_by_another_key_or_over_other_claims_is_refused() -> None:
    other = JwtSigner(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(JwtSignatureInvalid):
        verify(other.sign(sa_claims()), config(), NOW)
    head, _, sig = SIGNERS["RS256"].sign(sa_claims()).split(".")
    forged = b64(json.dumps(sa_claims(kubernetes_io=None, groups=["admin"])).encode())
    with pytest.raises(JwtSignatureInvalid):
        verify(f"{head}.{forged}.{sig}", config(), NOW)


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"exp": T - 61}, JwtExpired),
        ({"nbf": T + 61}, JwtNotYetValid),
        ({"iat": T + 61, "nbf": None}, JwtNotYetValid),
        ({"iat": None, "nbf": None, "exp": None}, JwtMalformed),
        ({"iss": "someone-else"}, JwtClaimRefused),
        ({"aud": ["other"]}, JwtClaimRefused),
        ({"exp": "soon"}, JwtMalformed),
    ],
)
def test_claims_outside_the_rules_are_refused(
    claims: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        verify(SIGNERS["RS256"].sign(sa_claims(**claims)), config(), NOW)


def test_clock_skew_leeway_is_sixty_seconds_by_default_and_configurable() -> None:
    token = SIGNERS["RS256"].sign(sa_claims(exp=T - 59))
    verify(token, config(), NOW)
    with pytest.raises(JwtExpired):
        verify(token, config(ClockSkewLeeway="-1s"), NOW)


def test_a_missing_exp_defaults_to_the_issue_time_plus_150_seconds() -> None:
    token = SIGNERS["RS256"].sign(sa_claims(exp=None, nbf=None, iat=T - 200))
    verify(token, config(), NOW)  # 200 < 150 + 60 s of clock skew
    with pytest.raises(JwtExpired):
        verify(token, config(ClockSkewLeeway="-1s"), NOW)
    verify(token, config(ClockSkewLeeway="-1s", ExpirationLeeway="5m"), NOW)


def test_an_audience_is_refused_when_none_is_bound() -> None:
    token = SIGNERS["RS256"].sign(sa_claims())
    with pytest.raises(JwtClaimRefused, match="no audiences bound"):
        verify(token, config(BoundAudiences=[]), NOW)


@pytest.mark.parametrize(
    "token", ["", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30", "W10.e30.", "e30.W10."]
)
def test_malformed_tokens_raise_a_narrow_error(token: str) -> None:
    with pytest.raises((JwtMalformed, JwtAlgorithmRefused)):
        verify(token, config(), NOW)


def test_bad_method_configs_are_refused_by_field() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(JwtConfigError, match="too small"):
        config(JwtSigner(weak))
    with pytest.raises(JwtConfigError, match="not a PEM public key"):
        JwtConfig.from_json({"JWTValidationPubKeys": ["nope"]})
    with pytest.raises(RecordError, match="field 'JWTSupportedAlgs'"):
        config(JWTSupportedAlgs=["HS256"])
    with pytest.raises(RecordError, match="field 'JWKSURL': unknown field"):
        config(JWKSURL="https://example/jwks")
    with pytest.raises(RecordError, match="field 'JWTValidationPubKeys'"):
        JwtConfig.from_json({})


def jwk_of(signer: JwtSigner) -> dict[str, str]:
    pub = signer.key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        return {
            "kty": "RSA",
            "n": b64(n.n.to_bytes((n.n.bit_length() + 7) // 8)),
            "e": b64(n.e.to_bytes(3)),
        }
    if isinstance(pub, ec.EllipticCurvePublicKey):
        p = pub.public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": b64(p.x.to_bytes(32)), "y": b64(p.y.to_bytes(32))}
    assert isinstance(pub, ed25519.Ed25519PublicKey)
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}


def test_keys_from_a_jwks_document_verify_tokens_of_each_algorithm() -> None:
    jwks = json.dumps(
        {"keys": [jwk_of(s) for s in SIGNERS.values()] + [{"kty": "RSA", "use": "enc"}]}
    )
    keys = load_jwks(jwks)
    assert len(keys) == 3
    cfg = JwtConfig.from_json(
        {"BoundIssuer": "loom-local", "BoundAudiences": ["loom"]}, jwks_keys=keys
    )
    for signer in SIGNERS.values():
        verify(signer.sign(sa_claims()), cfg, NOW)


@pytest.mark.parametrize(
    "jwks",
    [
        "nope",
        "{}",
        '{"keys": []}',
        '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
        '{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}',
        '{"keys": [{"kty": "RSA"}]}',
    ],
)
def test_a_jwks_without_a_usable_signing_key_is_refused(jwks: str) -> None:
    with pytest.raises(JwtConfigError):
        load_jwks(jwks)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, database=None)
@given(JSONISH, JSONISH, st.binary(max_size=80))
def test_hostile_tokens_raise_only_jwt_errors(header: object, payload: object, sig: bytes) -> None:
    token = ".".join(b64(json.dumps(part).encode()) for part in (header, payload)) + "." + b64(sig)
    for candidate in (token, token.replace(".", "", 1), token + "." + token):
        with contextlib.suppress(JwtError):
            verify(candidate, config(), NOW)


def test_a_token_nested_past_the_parsers_depth_is_malformed() -> None:
    deep = b64(("[" * 5000 + "]" * 5000).encode())
    with pytest.raises(JwtMalformed):
        verify(f"{deep}.{deep}.", config(), NOW)
