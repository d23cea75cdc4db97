"""An ACL login: a workload's bearer token (a service-account JWT) exchanged for an ACL token.

One code path for every caller: Kubernetes' connect-init and ``loom local run``. As
consul-k8s's connect-init does with ``-acl-auth-method``: read the pod's projected
service-account token (``-bearer-token-file``), ``POST /v1/acl/login`` with ``Meta {"pod":
"<namespace>/<name>"}`` (the controller finds the token by that when the pod goes away), use
the token for connect-init's own calls, and leave it for the sidecar in the shared volume
(``-acl-token-sink``, mode 0600, owned by the sidecar's user). Before handing it over,
connect-init asks the server whether the token may write the pod's service
(``/v1/internal/acl/authorize``): a pod whose ServiceAccount is not named like its service
gets a token for the ServiceAccount's service (the binding rule is ``${serviceaccount.name}``),
so it fails here, with ``403`` and ``Permission denied`` naming both names, instead of leaving
a sidecar that cannot get its certificate. A token that will not be used is logged out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom import defaults
from loom.api.asyncclient import AsyncClient
from loom.api.errors import ClientError, HTTPStatusError, LoginError
from loom.api.transport import TlsSettings

BEARER_TOKEN_FILE = Path(defaults.BEARER_TOKEN_FILE)
"""Where Kubernetes mounts a pod's service-account token (consul-k8s's default)."""


@dataclass(frozen=True)
class LoginSettings:
    """connect-init's ACL login (consul-k8s's flags of the same names)."""

    auth_method: str
    """``-acl-auth-method``: the ``kubernetes`` auth method to log in through."""
    token_sink: Path
    """``-acl-token-sink``: where the token is written for the sidecar (mode 0600)."""
    bearer_token_file: Path = BEARER_TOKEN_FILE
    """``-bearer-token-file``: the pod's service-account JWT."""
    token_owner: int | None = None
    """User ID to give the sink file to (the sidecar's) when connect-init runs as root."""


@dataclass(frozen=True)
class LoggedIn:
    """The login token and the identities it was bound to."""

    secret_id: str
    accessor_id: str
    identities: tuple[str, ...]
    """The service identities the binding rules gave it (the ServiceAccount's name)."""


def _read_bearer(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise LoginError(
            f"Error reading the service account token {path}: {exc.strerror}"
        ) from None
    if not text:
        raise LoginError(f"Error reading the service account token {path}: it is empty")
    return text


async def login(
    addr: str,
    settings: LoginSettings,
    pod: str,
    deadline: float,
    log: Callable[[str], None],
    retry_interval: float = 1.0,
    tls: TlsSettings | None = None,
) -> LoggedIn:
    """Log in, asking again while the server cannot be reached or rate-limits logins (429),
    until ``deadline`` (``time.monotonic``); a refusal is final (``Error logging in: ...
    403 ...``). ``tls``: how an https server is verified (None: from the environment)."""
    bearer = _read_bearer(settings.bearer_token_file)
    client = AsyncClient(addr, token="", tls=tls)  # a login carries no token, only the bearer
    body = {"AuthMethod": settings.auth_method, "BearerToken": bearer, "Meta": {"pod": pod}}
    while True:
        try:
            answer = (await client.request("POST", "/v1/acl/login", body)).body
            break
        except HTTPStatusError as exc:
            if exc.status == 429 and time.monotonic() + retry_interval <= deadline:
                log(f"logging in: {exc.reason}; retrying")  # the server's login rate limit
                await asyncio.sleep(retry_interval)
                continue
            raise LoginError(
                f"Error logging in: Unexpected response code: {exc.status} ({exc})"
            ) from None
        except ClientError as exc:
            if time.monotonic() + retry_interval > deadline:
                raise LoginError(f"Error logging in: {exc}") from None
            log(f"logging in: {exc.reason}; retrying")
            await asyncio.sleep(retry_interval)
    if not isinstance(answer, dict) or not isinstance(answer.get("SecretID"), str):
        raise LoginError("Error logging in: the server's answer is not a token")
    identities = tuple(
        str(s.get("ServiceName"))
        for s in answer.get("ServiceIdentities") or ()
        if isinstance(s, dict)
    )
    return LoggedIn(answer["SecretID"], str(answer.get("AccessorID")), identities)


async def check_service_write(
    addr: str,
    token: LoggedIn,
    settings: LoginSettings,
    service: str,
    tls: TlsSettings | None = None,
) -> None:
    """Refuse, as a login refusal, a token that may not write ``service``."""
    client = AsyncClient(addr, token=token.secret_id, tls=tls)
    asked = [{"Resource": "service", "Segment": service, "Access": "write"}]
    try:
        answer: Any = (await client.request("POST", "/v1/internal/acl/authorize", asked)).body
    except ClientError as exc:
        raise LoginError(f"Error checking the login token: {exc}") from None
    if isinstance(answer, list) and answer and answer[0].get("Allow") is True:
        return
    account = ", ".join(token.identities) or "(none)"
    raise LoginError(
        "Error logging in: Unexpected response code: 403 (Permission denied: the token "
        f"auth method {settings.auth_method!r} gave ServiceAccount {account!r} lacks "
        f"permission 'service:write' on {service!r}; the pod's serviceAccountName must "
        f"match its service name {service!r})"
    )


async def logout(addr: str, token: LoggedIn, tls: TlsSettings | None = None) -> None:
    """Best effort: a token connect-init will not hand over is deleted."""
    with contextlib.suppress(ClientError):
        client = AsyncClient(addr, token=token.secret_id, tls=tls)
        await client.request("POST", "/v1/acl/logout")


def write_token(settings: LoginSettings, token: LoggedIn) -> Path:
    """The token, alone, in the sink file: mode 0600, the sidecar's when we run as root."""
    path = settings.token_sink
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token.secret_id)
        os.chmod(tmp, 0o600)
        owner = settings.token_owner
        if owner is not None and os.geteuid() == 0 and owner != 0:
            os.chown(tmp, owner, -1)
        os.replace(tmp, path)
    except OSError as exc:
        raise LoginError(f"cannot write the ACL token to {path}: {exc.strerror}") from None
    return path


__all__ = [
    "BEARER_TOKEN_FILE",
    "LoggedIn",
    "LoginSettings",
    "check_service_write",
    "login",
    "logout",
    "write_token",
]
