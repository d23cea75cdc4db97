"""ACLs of the local mesh: the host's management token, the pods' JWTs and their logins.

``loom local up`` starts the server with ACLs on (default deny, unless asked otherwise) and
a management token made at the first ``up`` and kept 0600 in the state directory: the
``loom local`` commands use it, and ``LOOM_HTTP_TOKEN_FILE`` pointing at it lets the other
``loom`` commands use it too. The mesh has its own P-256 signing key (0600) and a ``jwt``
auth method, ``loom-local``, trusting that key's public half, with the binding rule
``BindType: service``, ``BindName: ${value.name}`` (the service-account name claim), both
written idempotently at every ``up``.

A pod plays a Kubernetes pod: for each of its services ``loom local run`` mints a
service-account-style JWT (``loom.acl.jwt.service_account_claims``; the account is the
service's name unless ``--service-account`` names another) into the pod's directory (0600,
root's), and logs in with it through connect-init's code (``loom.api.login``): ``POST
/v1/acl/login``, the ``service:write`` check that refuses a mismatched account with ``403``
and ``Permission denied``, then the token alone in the pod's directory, 0600, the sidecar's
(the proxy UID's). ``loom local rm`` logs the pod's tokens out. All failures are
``LocalError``s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from loom.acl.jwt import JwtSigner, service_account_claims
from loom.api.client import Client, ClientError, NotFoundError
from loom.api.errors import LoginError
from loom.api.login import LoggedIn, LoginSettings, check_service_write, login, logout, write_token
from loom.local.errors import LocalServerError, state_io

AUTH_METHOD = "loom-local"
"""The local mesh's ``jwt`` auth method."""
ISSUER = "loom-local"
"""``iss`` of the pods' JWTs, the method's ``BoundIssuer``."""
AUDIENCE = "loom-local"
"""``aud`` of the pods' JWTs, the method's only ``BoundAudiences``."""
JWT_TTL = dt.timedelta(hours=1)
"""Lifetime of a pod's JWT: it is used once, at ``run``, to log in."""
BIND_NAME = "${value.name}"


@dataclass(frozen=True)
class PodIdentity:
    """What one service of a pod logged in as, and where its files are."""

    service: str
    service_account: str
    jwt_file: Path
    token_file: Path


def write_secret(path: Path, text: str, owner: int | None = None) -> None:
    """``text`` alone in ``path``, mode 0600 from its creation (``owner``'s when given)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with state_io(f"cannot write {path}"):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        if owner is not None:
            os.chown(tmp, owner, -1)
        os.replace(tmp, path)


def management_token(path: Path) -> str:
    """The management token of ``path``, made (a UUID, as Consul's) when there is none."""
    with state_io(f"cannot read {path}"):
        if path.exists():
            text = path.read_text().strip()
            if text:
                return text
    secret = str(uuid.uuid4())
    write_secret(path, secret)
    return secret


def read_token(path: Path) -> str | None:
    """The token of ``path``; None when the file does not exist (ACLs off)."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LocalServerError(f"cannot read the token file {path}: {exc.strerror}") from exc


def signer(path: Path) -> JwtSigner:
    """The mesh's signing key (P-256, PEM in ``path``, 0600), made when there is none."""
    with state_io(f"cannot read the signing key {path}"):
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise LocalServerError(f"{path}: not a P-256 private key")
            return JwtSigner(key)
    new = ec.generate_private_key(ec.SECP256R1())
    pem = new.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    write_secret(path, pem)
    return JwtSigner(new)


def ensure_auth_method(client: Client, jwt_signer: JwtSigner) -> None:
    """The ``loom-local`` method trusting ``jwt_signer``'s key, and its binding rule; both
    idempotent (the method's config is written again, a matching rule is not duplicated)."""
    method = {
        "Name": AUTH_METHOD,
        "Type": "jwt",
        "DisplayName": "loom local pods",
        "Description": "service-account-style JWTs minted by loom local run",
        "Config": {
            "JWTValidationPubKeys": [jwt_signer.public_pem()],
            "BoundIssuer": ISSUER,
            "BoundAudiences": [AUDIENCE],
            "ClaimMappings": {
                "/kubernetes.io/serviceaccount/name": "name",
                "/kubernetes.io/namespace": "namespace",
            },
        },
    }
    try:
        try:
            client.get(f"/v1/acl/auth-method/{AUTH_METHOD}")
        except NotFoundError:
            client.put("/v1/acl/auth-method", method)
        else:
            client.put(f"/v1/acl/auth-method/{AUTH_METHOD}", method)
        rules = client.get("/v1/acl/binding-rules", authmethod=AUTH_METHOD) or []
        if not any(r.get("BindType") == "service" and r.get("BindName") == BIND_NAME
                   for r in rules):  # fmt: skip
            client.put("/v1/acl/binding-rule", {
                "AuthMethod": AUTH_METHOD, "BindType": "service", "BindName": BIND_NAME,
                "Description": "a pod's service account names its service",
            })  # fmt: skip
    except ClientError as exc:
        raise LocalServerError(f"cannot set up the auth method {AUTH_METHOD}: {exc}") from exc


def mint_jwt(jwt_signer: JwtSigner, service_account: str, pod: str, path: Path) -> None:
    """A service-account-style JWT for ``service_account`` of pod ``pod`` in ``path`` (0600)."""
    claims = service_account_claims(
        namespace="default",
        name=service_account,
        uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"loom-local:{pod}:{service_account}")),
        issuer=ISSUER,
        audiences=[AUDIENCE],
        now=dt.datetime.now(dt.UTC),
        ttl=JWT_TTL,
    )
    write_secret(path, jwt_signer.sign(claims))


def pod_login(addr: str, ident: PodIdentity, pod: str, owner: int, timeout: float) -> None:
    """Log in with the pod's JWT, as connect-init does, and leave the token for the sidecar.

    A token that may not write the service (the account names another) is logged out and
    the refusal, ``403`` ``Permission denied`` naming both names, is a ``LocalServerError``.
    """
    settings = LoginSettings(
        auth_method=AUTH_METHOD,
        token_sink=ident.token_file,
        bearer_token_file=ident.jwt_file,
        token_owner=owner,
    )

    async def go() -> None:
        token = await login(addr, settings, f"default/{pod}", time.monotonic() + timeout,
                            lambda _: None)  # fmt: skip
        try:
            await check_service_write(addr, token, settings, ident.service)
        except LoginError:
            await logout(addr, token)
            raise
        write_token(settings, token)

    try:
        asyncio.run(go())
    except LoginError as exc:
        raise LocalServerError(f"pod {pod}: service {ident.service}: {exc}") from exc


def pod_logout(addr: str, token_file: Path) -> None:
    """Best effort: the login token in ``token_file`` is deleted from the server."""
    secret = read_token(token_file)
    if secret is not None:
        asyncio.run(logout(addr, LoggedIn(secret, "", ())))
