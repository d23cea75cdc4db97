"""The ``kubernetes`` auth method's network calls: a TokenReview, then the ServiceAccount.

``loom.acl.kubernetes`` (pure) builds the request body and reads the answer; this module is
the I/O between them, done the way Consul's ``kubeauth`` validator does it: ``POST
{Host}/apis/authentication.k8s.io/v1/tokenreviews`` with the method's own
``ServiceAccountJWT`` as ``Authorization: Bearer``, trusting only ``CACert`` when it is given
(the system CAs otherwise). The API server's answer, whatever it is, is handed back as the
parsed JSON for ``login_variables`` to judge; only failures to get an answer at all
(unreachable, TLS refused, timeout, a status other than 201/200, a body that is not JSON)
become a ``TokenReviewError``, with aiohttp's exception wrapped, never leaked.

After a successful review Consul reads the reviewed ServiceAccount (``GET
/api/v1/namespaces/{ns}/serviceaccounts/{name}``, same credential) for its
``consul.hashicorp.com/service-name`` annotation; so does ``service_account`` here, and a
failure to read it fails the login as Consul's does ("annotation lookup failed").

A 401 or 403 from the API server means Loom's own reviewer credential is wrong or lacks
``system:auth-delegator`` (and ``get`` on serviceaccounts): that is the operator's problem,
not the workload's, and its error says so.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from loom.acl.kubernetes import KubernetesConfig, token_review_request
from loom.control.errors import ControlError

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
TIMEOUT_S = 10.0
"""Seconds a review may take in all (connect, TLS, answer); Consul's client uses 10 s too."""
MAX_ANSWER_BYTES = 1024 * 1024


class TokenReviewError(ControlError):
    """The API server could not be asked (one line naming the host and the cause)."""


def review_context(config: KubernetesConfig) -> ssl.SSLContext:
    """TLS trusting ``CACert`` alone when it is set, else the system's CAs."""
    if config.ca_cert:
        return ssl.create_default_context(cadata=config.ca_cert)
    return ssl.create_default_context()


async def _call(
    config: KubernetesConfig, method: str, path: str, body: Any, timeout: float, what: str
) -> dict[str, Any]:
    url = config.host.rstrip("/") + path
    where = f"kubernetes: {what} at {config.host}"
    headers = {
        "Authorization": f"Bearer {config.service_account_jwt}",
        "Accept": "application/json",
    }
    ssl_arg: ssl.SSLContext | bool = review_context(config) if url.startswith("https://") else False
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(method, url, json=body, headers=headers, ssl=ssl_arg) as resp,
        ):
            raw = await _read_capped(resp.content)
            status = resp.status
    except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
        raise TokenReviewError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise TokenReviewError(f"{where}: no answer within {timeout:g}s") from exc
    if status in (401, 403):
        raise TokenReviewError(
            f"{where}: the API server refused Loom's ServiceAccountJWT ({status}); it needs "
            "a valid token bound to system:auth-delegator, allowed to get serviceaccounts"
        )
    if status not in (200, 201):
        raise TokenReviewError(f"{where}: the API server answered {status}")
    if len(raw) > MAX_ANSWER_BYTES:
        raise TokenReviewError(f"{where}: the answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenReviewError(f"{where}: the answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise TokenReviewError(f"{where}: the answer is not a JSON object")
    return doc


async def _read_capped(content: aiohttp.StreamReader) -> bytes:
    """The whole body, or one byte more than the cap (``read(n)`` returns what has arrived)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER_BYTES:
        chunk = await content.read(MAX_ANSWER_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class KubernetesApi:
    """The two calls, over aiohttp; ``Logins`` takes any object with these methods."""

    def __init__(self, timeout: float = TIMEOUT_S) -> None:
        self.timeout = timeout

    async def review(self, config: KubernetesConfig, pod_jwt: str) -> Mapping[str, Any]:
        """The API server's TokenReview of ``pod_jwt`` (the answer, authenticated or not)."""
        body = token_review_request(pod_jwt)
        return await _call(config, "POST", REVIEW_PATH, body, self.timeout, "TokenReview")

    async def service_account(
        self, config: KubernetesConfig, namespace: str, name: str
    ) -> Mapping[str, Any]:
        """The ServiceAccount object (names already checked as Kubernetes names)."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        return await _call(
            config, "GET", path, None, self.timeout, "annotation lookup of the ServiceAccount"
        )


__all__ = ["KubernetesApi", "TokenReviewError", "review_context"]
