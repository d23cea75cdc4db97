"""The federated CA over HTTP: the primary signs secondaries' intermediates; a secondary follows.

- ``POST /v1/internal/connect/ca/sign-intermediate`` (Consul's ``ConnectCA.SignIntermediate``,
  ``operator:write``): the body is a secondary's CA request (PEM); the answer is the
  intermediate certificate (``IntermediatePEM``) beside the roots, in the shape of
  ``/v1/connect/ca/roots``, at signing time. Only the primary signs; the request is checked
  strictly first (``loom.ca.csr.read_ca_csr``: 400 saying what is wrong, nothing signed).
- ``roots_body``: the JSON of ``/v1/connect/ca/roots`` (a secondary's lists the primary's roots,
  same IDs, and its own intermediate as the active root's ``IntermediateCerts``).
- ``run_federated_ca``: in a secondary, ``loom.control.fedca.FederatedCa`` with its requests to
  the primary sent through ``loom.server.wan.call`` and the replication token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from loom.ca.csr import MAX_CSR_PEM
from loom.control.certs import Certs
from loom.control.fedca import FederatedCa, FederatedCaError
from loom.control.state import State
from loom.domain.fields import ValidationError
from loom.server import guard, wan
from loom.store.tables import CA

log = logging.getLogger("loom.server.fedca")

SIGN_INTERMEDIATE = "/v1/internal/connect/ca/sign-intermediate"

Doc = dict[str, Any]


def roots_body(certs: Certs, index: int) -> Doc:
    """Consul's ``IndexedCARoots`` (``CaNotInitialized`` in a secondary not yet federated)."""
    roots = certs.roots()
    intermediates = certs.intermediates
    return {
        "ActiveRootID": roots[0].id,
        "TrustDomain": roots[0].trust_domain,
        "Roots": [
            {
                "ID": root.id,
                "Name": "Loom CA Primary Cert" if n == 0 else "Loom CA Retired Cert",
                "SerialNumber": 0,
                "NotBefore": root.not_before.isoformat(),
                "NotAfter": root.not_after.isoformat(),
                "RootCert": root.cert_pem,
                "IntermediateCerts": intermediates if n == 0 else [],
                "Active": n == 0,
                "PrivateKeyType": "ec",
                "PrivateKeyBits": 256,
                "CreateIndex": index,
                "ModifyIndex": index,
            }
            for n, root in enumerate(roots)
        ],
    }


async def sign_intermediate(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    if (request.content_length or 0) > MAX_CSR_PEM:
        raise ValidationError("CSR: not a PEM text of reasonable size")
    raw = await request.read()  # bounded by the app's client_max_size
    if len(raw) > MAX_CSR_PEM:
        raise ValidationError("CSR: not a PEM text of reasonable size")
    try:
        csr = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValidationError("CSR: not UTF-8 text") from exc
    pem = state.certs.sign_intermediate(csr)
    index = state.store.table_index((CA.name,))
    body = {"IntermediatePEM": pem, **roots_body(state.certs, index)}
    return web.json_response(body, headers={"X-Consul-Index": str(index)}, dumps=json.dumps)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_post(SIGN_INTERMEDIATE, sign_intermediate)


async def run_federated_ca(state: State) -> None:
    """Keep a secondary's CA federated with the primary's (until cancelled)."""
    primary = state.certs.primary
    token = state.settings.replication_token or None

    async def call(
        method: str, path: str, query: dict[str, str] | None, body: bytes | None, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            return await wan.call(state, primary, method, path, query=query, body=body,
                                  token=token, timeout_s=timeout)  # fmt: skip
        except wan.NoPathToDatacenter as exc:
            reason = f" ({exc.reason})" if exc.reason else ""
            raise FederatedCaError(f"no path to the primary datacenter {primary}{reason}") from exc

    log.info("federated CA: following the roots of the primary datacenter %s", primary)
    clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
    await FederatedCa(state.certs, state.store, state.lock, call, clock).run()
