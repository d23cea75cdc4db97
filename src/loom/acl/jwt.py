"""The ``jwt`` auth method: verify a signed JWT with static public keys, map its claims.

Consul's rules (``internal/go-sso/oidcauth/jwt.go``), done with ``cryptography``:

- Only RS256, ES256 and EdDSA, each with its own key type. ``alg: none``, every HMAC
  algorithm (the classic confusion: HS256 "signed" with the RSA public key as the secret) and
  an algorithm that does not match the key are refused before any signature is checked.
- A token needs at least one of ``iat``, ``nbf``, ``exp``. A missing ``exp`` is the latest of
  ``iat``/``nbf`` plus ``ExpirationLeeway`` (150 s when 0, none when negative); a missing
  ``nbf`` is ``iat``, else ``exp`` minus ``NotBeforeLeeway``. ``exp``/``nbf``/``iat`` are
  checked against ``now`` with ``ClockSkewLeeway`` (60 s when 0, none when negative).
- ``BoundIssuer`` must equal ``iss`` when set. With ``BoundAudiences`` one ``aud`` must be in
  it; without, a token that carries an ``aud`` is refused (Consul's strict mode).
- Keys are PEM (``JWTValidationPubKeys``) or a JWKS document the caller has read
  (``load_jwks``: from a file, or fetched from ``JWKSURL`` / OIDC discovery, whose fields
  ``loom.acl.jwtremote`` reads).
- ``ClaimMappings`` copy claims (a name, or a JSON pointer such as
  ``/kubernetes.io/serviceaccount/name``) to ``value.<mapped>``; ``ListClaimMappings`` to
  ``list.<mapped>``. These are the binding-rule variables.

``JwtSigner`` mints tokens (tests, and later ``loom local``'s service-account-style JWTs).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from loom.acl.errors import AclError
from loom.acl.wire import Fields

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

SUPPORTED_ALGS = ("RS256", "ES256", "EdDSA")
DEFAULT_LEEWAY = 150.0  # seconds; go-sso's claimDefaultLeeway
DEFAULT_CLOCK_SKEW = 60.0  # seconds; go-jose's DefaultLeeway
MAX_TOKEN_BYTES = 16 * 1024
MIN_RSA_BITS = 2048


class JwtError(AclError):
    """Root of the ``jwt`` method's refusals."""


class JwtMalformed(JwtError):
    """Not three base64url parts of JSON, or a claim of the wrong type."""


class JwtAlgorithmRefused(JwtError):
    """``none``, HMAC, an unsupported algorithm, or one that does not fit any key."""


class JwtSignatureInvalid(JwtError):
    """No configured key validates the signature."""


class JwtExpired(JwtError):
    """``exp`` (plus leeway) is past."""


class JwtNotYetValid(JwtError):
    """``nbf`` or ``iat`` (minus leeway) is in the future."""


class JwtClaimRefused(JwtError):
    """Issuer or audience does not match, or a mapped claim has no usable value."""


class JwtConfigError(JwtError):
    """The auth method's ``Config`` is unusable (bad key PEM, unknown field)."""


def _b64decode(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwtMalformed(f"jwt: {what} is not base64url") from exc


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_fits(alg: str, key: PublicKey) -> bool:
    if alg == "RS256":
        return isinstance(key, rsa.RSAPublicKey)
    if alg == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    return alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey)


def load_public_key(pem: str) -> PublicKey:
    """An RSA (2048 bits or more), P-256 or Ed25519 public key, or a certificate holding one."""
    data = pem.encode()
    key: object
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise JwtConfigError("jwt: JWTValidationPubKeys: not a PEM public key") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise JwtConfigError(
            f"jwt: JWTValidationPubKeys: RSA key of {key.key_size} bits is too small"
        )
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return key
    raise JwtConfigError("jwt: JWTValidationPubKeys: key type is not RSA, ECDSA or Ed25519")


def _jwk_int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JwtConfigError(f"jwt: JWKS key is missing {name!r}")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return int.from_bytes(raw)


def _jwk(jwk: object) -> PublicKey | None:
    """One JWK as a public key; ``None`` for keys not meant for signatures."""
    if not isinstance(jwk, Mapping):
        raise JwtConfigError("jwt: JWKS keys must be JSON objects")
    if jwk.get("use", "sig") != "sig":
        return None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "RSA":
            numbers = rsa.RSAPublicNumbers(_jwk_int(jwk, "e"), _jwk_int(jwk, "n"))
            key = numbers.public_key()
            if key.key_size < MIN_RSA_BITS:
                raise JwtConfigError(f"jwt: JWKS RSA key of {key.key_size} bits is too small")
            return key
        if kty == "EC" and crv == "P-256":
            point = ec.EllipticCurvePublicNumbers(
                _jwk_int(jwk, "x"), _jwk_int(jwk, "y"), ec.SECP256R1()
            )
            return point.public_key()
        if kty == "OKP" and crv == "Ed25519":
            x = jwk.get("x")
            if not isinstance(x, str):
                raise JwtConfigError("jwt: JWKS key is missing 'x'")
            return ed25519.Ed25519PublicKey.from_public_bytes(_b64decode(x, "JWKS x"))
    except (ValueError, binascii.Error, JwtMalformed) as exc:
        raise JwtConfigError(f"jwt: JWKS {kty} key is not valid") from exc
    raise JwtConfigError(f"jwt: JWKS key type {kty!r} {crv or ''} is not supported".rstrip())


def load_jwks(text: str) -> tuple[PublicKey, ...]:
    """The signing keys of a JWKS document (RSA, EC P-256, Ed25519); the caller reads the file."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JwtConfigError("jwt: JWKS is not JSON") from exc
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise JwtConfigError("jwt: JWKS has no 'keys' list")
    found = tuple(k for k in (_jwk(jwk) for jwk in keys) if k is not None)
    if not found:
        raise JwtConfigError("jwt: JWKS holds no signing key")
    return found


def _seconds(f: Fields, name: str) -> float:
    value = f.duration(name)
    return value.total_seconds() if value is not None else 0.0


@dataclass(frozen=True)
class JwtConfig:
    """The ``Config`` of a ``jwt`` auth method (static keys), fields named as Consul's."""

    public_keys: tuple[PublicKey, ...]
    """``JWTValidationPubKeys``: PEM keys any of which may have signed a token."""
    bound_issuer: str = ""
    """``BoundIssuer``: when set, ``iss`` must equal it."""
    bound_audiences: tuple[str, ...] = ()
    """``BoundAudiences``: when set, one ``aud`` must be in it."""
    claim_mappings: Mapping[str, str] = field(default_factory=dict)
    """``ClaimMappings``: claim -> name, offered to binding rules as ``value.<name>``."""
    list_claim_mappings: Mapping[str, str] = field(default_factory=dict)
    """``ListClaimMappings``: claim -> name, offered as ``list.<name>``."""
    supported_algs: tuple[str, ...] = SUPPORTED_ALGS
    """``JWTSupportedAlgs``: the algorithms accepted (a subset of RS256, ES256, EdDSA)."""
    expiration_leeway: float = 0.0
    """``ExpirationLeeway`` in seconds: 0 means 150 s, negative means none."""
    not_before_leeway: float = 0.0
    """``NotBeforeLeeway`` in seconds: 0 means 150 s, negative means none."""
    clock_skew_leeway: float = 0.0
    """``ClockSkewLeeway`` in seconds: 0 means 60 s, negative means none."""

    @classmethod
    def from_json(
        cls, doc: object, jwks_keys: Sequence[PublicKey] = (), *, remote: bool = False
    ) -> JwtConfig:
        """Read Consul's ``Config``; ``jwks_keys`` (see ``load_jwks``) add to the static keys.
        ``remote``: the keys come from a URL (``loom.acl.jwtremote``), so none may be here yet."""
        f = Fields("AuthMethod.Config", doc)
        pems = f.strings("JWTValidationPubKeys")
        algs = f.strings("JWTSupportedAlgs") or SUPPORTED_ALGS
        for alg in algs:
            if alg not in SUPPORTED_ALGS:
                raise f.error(
                    "JWTSupportedAlgs", f"{alg!r} is not one of {', '.join(SUPPORTED_ALGS)}"
                )
        claims, lists = f.mapping("ClaimMappings"), f.mapping("ListClaimMappings")
        for name, mapping in (("ClaimMappings", claims), ("ListClaimMappings", lists)):
            if not all(isinstance(v, str) and v for v in mapping.values()):
                raise f.error(name, "every mapping must name a non-empty variable")
        config = cls(
            public_keys=tuple(load_public_key(p) for p in pems) + tuple(jwks_keys),
            bound_issuer=f.text("BoundIssuer"),
            bound_audiences=f.strings("BoundAudiences"),
            claim_mappings=claims,
            list_claim_mappings=lists,
            supported_algs=algs,
            expiration_leeway=_seconds(f, "ExpirationLeeway"),
            not_before_leeway=_seconds(f, "NotBeforeLeeway"),
            clock_skew_leeway=_seconds(f, "ClockSkewLeeway"),
        )
        f.done()
        if not config.public_keys and not remote:
            raise f.error("JWTValidationPubKeys", "at least one public key (or a JWKS) is required")
        return config

    def variables(self) -> list[str]:
        """The binding-rule variables a login through this method offers."""
        return [f"value.{v}" for v in self.claim_mappings.values()] + [
            f"list.{v}" for v in self.list_claim_mappings.values()
        ]


def _leeway(value: float, default: float) -> float:
    return default if value == 0 else max(value, 0.0)


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name, or by JSON pointer when the name starts with ``/``."""
    if not name.startswith("/"):
        return claims.get(name)
    node: Any = claims
    for part in name[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _scalar(value: Any, claim: str) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value)
    raise JwtClaimRefused(f"jwt: claim {claim!r} cannot be converted to a string")


def _numeric(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JwtMalformed(f"jwt: claim {name!r} is not a number")
    return float(value)


@dataclass(frozen=True)
class VerifiedJwt:
    claims: Mapping[str, Any]
    vars: Mapping[str, str | tuple[str, ...]]
    """Binding-rule variables: ``value.<name>`` strings and ``list.<name>`` tuples."""


def _verify_signature(alg: str, key: PublicKey, signed: bytes, sig: bytes) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if len(sig) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(sig, signed)
    except InvalidSignature:
        return False
    return True


def verify(token: str, config: JwtConfig, now: dt.datetime) -> VerifiedJwt:
    """The claims of a valid token and its binding variables; a narrow ``JwtError`` otherwise."""
    if len(token) > MAX_TOKEN_BYTES:
        raise JwtMalformed("jwt: token is too large")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise JwtMalformed("jwt: expected three dot-separated parts")
    try:
        header = json.loads(_b64decode(parts[0], "header"))
        claims = json.loads(_b64decode(parts[1], "payload"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise JwtMalformed("jwt: header or payload is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtMalformed("jwt: header and payload must be JSON objects")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise JwtAlgorithmRefused("jwt: unsigned tokens (alg none) are refused")
    if alg.upper().startswith("HS"):
        raise JwtAlgorithmRefused(
            f"jwt: {alg!r} (a shared secret) is refused; keys are public keys"
        )
    if alg not in config.supported_algs:
        raise JwtAlgorithmRefused(f"jwt: algorithm {alg!r} is not accepted")
    if "crit" in header:
        raise JwtAlgorithmRefused("jwt: critical header extensions are not supported")
    keys = [k for k in config.public_keys if _alg_fits(alg, k)]
    if not keys:
        raise JwtAlgorithmRefused(f"jwt: no configured key is of the type {alg} needs")
    signed = f"{parts[0]}.{parts[1]}".encode()
    sig = _b64decode(parts[2], "signature")
    if not any(_verify_signature(alg, k, signed, sig) for k in keys):
        raise JwtSignatureInvalid("jwt: no known key successfully validated the token signature")
    _check_times(claims, config, now)
    _check_bound(claims, config)
    return VerifiedJwt(claims, _variables(claims, config))


def _check_times(claims: Mapping[str, Any], config: JwtConfig, now: dt.datetime) -> None:
    iat, nbf, exp = (_numeric(claims, n) for n in ("iat", "nbf", "exp"))
    if iat == nbf == exp == 0:
        raise JwtMalformed("jwt: no issue time, notbefore, or expiration time encoded in token")
    if exp == 0:
        exp = max(iat, nbf) + _leeway(config.expiration_leeway, DEFAULT_LEEWAY)
    if nbf == 0:
        nbf = iat if iat else exp - _leeway(config.not_before_leeway, DEFAULT_LEEWAY)
    skew = _leeway(config.clock_skew_leeway, DEFAULT_CLOCK_SKEW)
    t = now.timestamp()
    if t - skew > exp:
        raise JwtExpired("jwt: token is expired (exp)")
    if t + skew < nbf:
        raise JwtNotYetValid("jwt: token is not valid yet (nbf)")
    if iat and t + skew < iat:
        raise JwtNotYetValid("jwt: token was issued in the future (iat)")


def _check_bound(claims: Mapping[str, Any], config: JwtConfig) -> None:
    if config.bound_issuer and claims.get("iss") != config.bound_issuer:
        raise JwtClaimRefused("jwt: issuer (iss) does not match BoundIssuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if aud is not None and not (isinstance(aud, str) or all(isinstance(a, str) for a in audiences)):
        raise JwtMalformed("jwt: claim 'aud' is not a string or a list of strings")
    if config.bound_audiences:
        if not set(audiences) & set(config.bound_audiences):
            raise JwtClaimRefused("jwt: aud claim does not match any bound audience")
    elif audiences:
        raise JwtClaimRefused("jwt: audience claim found in JWT but no audiences bound")


def _variables(claims: Mapping[str, Any], config: JwtConfig) -> dict[str, str | tuple[str, ...]]:
    out: dict[str, str | tuple[str, ...]] = {}
    for claim, name in config.claim_mappings.items():
        value = _claim(claims, claim)
        out[f"value.{name}"] = "" if value is None else _scalar(value, claim)
    for claim, name in config.list_claim_mappings.items():
        value = _claim(claims, claim)
        items = [] if value is None else value if isinstance(value, list) else [value]
        out[f"list.{name}"] = tuple(_scalar(v, claim) for v in items)
    return out


class JwtSigner:
    """Signs claims with a private key: RS256 for RSA, ES256 for P-256, EdDSA for Ed25519."""

    def __init__(self, key: PrivateKey, kid: str = "") -> None:
        if isinstance(key, rsa.RSAPrivateKey):
            self.alg = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
            self.alg = "ES256"
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self.alg = "EdDSA"
        else:
            raise JwtConfigError("jwt: signing keys are RSA, P-256 or Ed25519")
        self.key = key
        self.kid = kid

    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, claims: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> str:
        head: dict[str, Any] = {"alg": self.alg, "typ": "JWT", **(header or {})}
        if self.kid:
            head.setdefault("kid", self.kid)
        signing = (
            _b64encode(json.dumps(head, separators=(",", ":")).encode())
            + "."
            + _b64encode(json.dumps(dict(claims), separators=(",", ":")).encode())
        )
        data = signing.encode()
        if isinstance(self.key, rsa.RSAPrivateKey):
            sig = self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(self.key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32) + s.to_bytes(32)
        else:
            sig = self.key.sign(data)
        return signing + "." + _b64encode(sig)


def service_account_claims(
    *,
    namespace: str,
    name: str,
    uid: str,
    issuer: str,
    audiences: Sequence[str],
    now: dt.datetime,
    ttl: dt.timedelta,
) -> dict[str, Any]:
    """Claims shaped as a Kubernetes projected service-account token's."""
    iat = int(now.timestamp())
    return {
        "iss": issuer,
        "aud": list(audiences),
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(ttl.total_seconds()),
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
    }
