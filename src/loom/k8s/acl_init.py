"""``loom k8s acl-init``: the ACL records an installation needs, made once by a Job.

consul-k8s's ``server-acl-init``, reduced to what Loom's components use. With the server's
management token (the Secret ``loom install`` generated, which the server was started with
as ``--acl-initial-management-token``) it writes, each idempotently so a rerun of the Job
changes nothing:

- the ``kubernetes`` auth method (``loom-k8s-auth-method``): ``Host`` the in-cluster API
  server, ``CACert`` and ``ServiceAccountJWT`` from the reviewer's service-account token
  Secret (the reviewer is bound to ``system:auth-delegator`` and may get serviceaccounts);
- its binding rule ``BindType: service``, ``BindName: ${serviceaccount.name}``;
- the controller's policy (``service_prefix ""`` and ``node_prefix ""`` write, to register
  and deregister pods; ``acl = "write"``, to delete a gone pod's login tokens; intentions and
  ``mesh = "write"``, for the config entries of the CRDs) and its token,
  whose SecretID is the one ``loom install`` rendered into the controller's Secret;
- the anonymous token's DNS rights: the templated policy ``builtin/dns`` (Consul's rules:
  ``node_prefix ""``, ``service_prefix ""`` and ``query_prefix ""`` read), as consul-k8s's
  ``server-acl-init`` gives it, so the DNS proxy beside the server (which has no token)
  answers under default deny (``docs/security.md`` says why anonymous and not a token).

The webhook gets no token: it never calls the Loom server (it answers the API server from
the pod and its values alone). Every failure is a ``K8sError`` (``AclInitError``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.api import AsyncClient, ClientError, HTTPStatusError
from loom.api.errors import NotFoundError
from loom.inject.settings import DEFAULT_AUTH_METHOD
from loom.k8s.errors import AclInitError

BIND_NAME = "${serviceaccount.name}"
ANONYMOUS_TOKEN = "00000000-0000-0000-0000-000000000002"
"""AccessorID of Consul's anonymous token (the rights of requests without a token)."""
DNS_TEMPLATE = "builtin/dns"
"""Consul's templated policy with what DNS needs: read on every node, service and query."""
CONTROLLER_RULES = """\
service_prefix "" {
  policy = "write"
  intentions = "write"
}
node_prefix "" {
  policy = "write"
}
acl = "write"
mesh = "write"
"""
"""The controller's rights: register and deregister any pod, delete login tokens, and write the
config entries of consul.hashicorp.com resources (service-defaults and intentions through the
service rule, proxy-defaults and mesh through ``mesh``), as consul-k8s's controller's."""


@dataclass(frozen=True)
class AclInitConfig:
    """What ``loom k8s acl-init`` makes (its flags)."""

    http_addr: str
    """The server's HTTP API."""
    management_token: str
    """The server's initial management token (from its Secret)."""
    kubernetes_host: str
    """The API server the auth method sends TokenReviews to."""
    ca_cert: str
    """PEM of the CA that signed that API server's certificate."""
    reviewer_jwt: str
    """The reviewer service account's token (``ServiceAccountJWT``)."""
    controller_token: str
    """SecretID of the controller's token (from its Secret)."""
    auth_method: str = DEFAULT_AUTH_METHOD
    """Name of the ``kubernetes`` auth method."""
    prefix: str = "loom"
    """``global.name``: names the controller's policy ``<prefix>-controller``."""
    timeout: float = 120.0
    """How long to wait for the server to answer at all."""


def read_secret_file(path: Path, what: str) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise AclInitError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if not text:
        raise AclInitError(f"{what} {path} is empty")
    return text


async def _wait(api: AsyncClient, deadline: float, log: Callable[[str], None]) -> None:
    while True:
        try:
            await api.get("/v1/acl/token/self")
            return
        except HTTPStatusError as exc:
            raise AclInitError(f"the management token is refused: {exc}") from exc
        except ClientError as exc:
            if time.monotonic() > deadline:
                raise AclInitError(f"the server did not answer: {exc}") from exc
            log(f"waiting for the server: {exc}")
            await asyncio.sleep(1.0)


async def _upsert(api: AsyncClient, read: str, create: str, update: str, body: Any) -> Any:
    """Update the record ``read`` finds (keeping its ID), else create it."""
    try:
        found = await api.get(read)
    except NotFoundError:
        return (await api.request("PUT", create, body)).body
    if isinstance(found, dict) and "ID" in found:
        body = {**body, "ID": found["ID"]}
        update = update.format(id=found["ID"])
    return (await api.request("PUT", update, body)).body


async def acl_init(config: AclInitConfig, log: Callable[[str], None]) -> None:
    api = AsyncClient(config.http_addr, token=config.management_token)
    await _wait(api, time.monotonic() + config.timeout, log)
    try:
        method = {
            "Name": config.auth_method,
            "Type": "kubernetes",
            "DisplayName": "Kubernetes pods of this cluster",
            "Config": {
                "Host": config.kubernetes_host,
                "CACert": config.ca_cert,
                "ServiceAccountJWT": config.reviewer_jwt,
            },
        }
        name = config.auth_method
        await _upsert(api, f"/v1/acl/auth-method/{name}", "/v1/acl/auth-method",
                      f"/v1/acl/auth-method/{name}", method)  # fmt: skip
        log(f"auth method {name} -> {config.kubernetes_host}")
        rules = await api.get("/v1/acl/binding-rules", authmethod=name) or []
        if not any(r.get("BindType") == "service" and r.get("BindName") == BIND_NAME
                   for r in rules):  # fmt: skip
            await api.request("PUT", "/v1/acl/binding-rule", {
                "AuthMethod": name, "BindType": "service", "BindName": BIND_NAME,
                "Description": "a pod's ServiceAccount names its service",
            })  # fmt: skip
            log(f"binding rule: service {BIND_NAME}")
        policy_name = f"{config.prefix}-controller"
        policy = {"Name": policy_name, "Description": "the endpoints controller",
                  "Rules": CONTROLLER_RULES}  # fmt: skip
        await _upsert(api, f"/v1/acl/policy/name/{policy_name}", "/v1/acl/policy",
                      "/v1/acl/policy/{id}", policy)  # fmt: skip
        tokens = await api.get("/v1/acl/tokens") or []
        if not any(t.get("SecretID") == config.controller_token for t in tokens):
            await api.request("PUT", "/v1/acl/token", {
                "SecretID": config.controller_token,
                "Description": f"{config.prefix} endpoints controller",
                "Policies": [{"Name": policy_name}],
            })  # fmt: skip
            log(f"token of the endpoints controller (policy {policy_name})")
        await _anonymous_dns(api, log)
    except ClientError as exc:
        raise AclInitError(f"acl-init: {exc}") from exc
    log("ACLs of the installation are in place")


async def _anonymous_dns(api: AsyncClient, log: Callable[[str], None]) -> None:
    """Add ``builtin/dns`` to the anonymous token, keeping whatever else it holds."""
    anonymous = await api.get(f"/v1/acl/token/{ANONYMOUS_TOKEN}")
    templated = list(anonymous.get("TemplatedPolicies") or [])
    if any(t.get("TemplateName") == DNS_TEMPLATE for t in templated):
        return
    body = {key: anonymous[key] for key in ("Description", "Policies", "Roles",
                                           "ServiceIdentities", "NodeIdentities")
            if anonymous.get(key)}  # fmt: skip
    body["TemplatedPolicies"] = [*templated, {"TemplateName": DNS_TEMPLATE}]
    await api.request("PUT", f"/v1/acl/token/{ANONYMOUS_TOKEN}", body)
    log(f"anonymous token: {DNS_TEMPLATE} (the DNS proxy answers without a token)")


__all__ = ["CONTROLLER_RULES", "AclInitConfig", "AclInitError", "acl_init", "read_secret_file"]
