"""The agent's identity loop against a stand-in server built on Loom's real CA (the API
client's transport seam, ``MockTransport``): only a CSR goes out, a roots change re-signs
at once under the new root, and a short leaf is renewed at about half its remaining life.
Real-server behaviour is in tests/e2e/test_mesh_acl_keys.py; the stand-in exists because the
server has no CA rotation to trigger a roots change with."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from loom.api import AsyncClient, MockTransport
from loom.api.codec import Request, Response
from loom.ca.authority import Root, Signer, new_root
from loom.ca.csr import read_csr
from loom.dataplane.identity import WorkloadIdentity
from loom.dataplane.sds import SecretStore

TD = "11111111-2222-3333-4444-555555555555.consul"


def _roots_doc(root: Root) -> dict[str, object]:
    return {"TrustDomain": TD, "ActiveRootID": root.id, "Roots": [{"RootCert": root.cert_pem}]}


class StandIn:
    """``/v1/agent/connect/ca/roots`` (blocking: answers index 1, then 2 once rotated) and
    ``/v1/loom/connect/ca/sign`` with the active root."""

    def __init__(self, ttl: dt.timedelta) -> None:
        now = dt.datetime.now(dt.UTC)
        self.roots = [new_root(TD, now), new_root(TD, now)]
        self.active = 0
        self.ttl = ttl
        self.rotated = asyncio.Event()
        self.bodies: list[bytes] = []
        self.registered = True
        self.polls = 0
        self.polled = asyncio.Condition()

    async def __call__(self, req: Request) -> Response:
        self.bodies.append(req.body)
        if req.target.startswith("/v1/agent/service/"):
            async with self.polled:
                self.polls += 1
                self.polled.notify_all()
            if not self.registered:
                return Response(404, "Not Found", {}, b"unknown service")
            return _ok({"ID": req.target.rsplit("/", 1)[1]})
        if req.target.startswith("/v1/agent/connect/ca/roots"):
            if "index=" in req.target and self.active == 0:
                await self.rotated.wait()
            root = self.roots[self.active]
            return _ok(_roots_doc(root), index=self.active + 1)
        assert req.target == "/v1/loom/connect/ca/sign" and req.method == "PUT"
        csr = read_csr(json.loads(req.body)["CSR"])
        signer = Signer(self.roots[self.active])
        leaf = signer.sign(csr.identity, csr.public_key(), dt.datetime.now(dt.UTC), self.ttl)
        return _ok({"SerialNumber": leaf.serial, "CertPEM": leaf.cert_pem,
                    "ValidBefore": leaf.not_after.isoformat()})  # fmt: skip


def _ok(doc: object, index: int = 1) -> Response:
    headers = {"content-type": "application/json", "x-consul-index": str(index)}
    return Response(200, "OK", headers, json.dumps(doc).encode())


def _leaf(store: SecretStore) -> tuple[x509.Certificate, str, str]:
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
    from google.protobuf import any_pb2

    assert store.current is not None
    out = {}
    for name, packed in store.current.resources.items():
        s = secret_pb2.Secret()
        assert any_pb2.Any.FromString(packed).Unpack(s)
        out[name] = s
    tls = out["leaf"].tls_certificate
    cert = x509.load_pem_x509_certificate(tls.certificate_chain.inline_string.encode())
    return (
        cert,
        tls.private_key.inline_string,
        out["roots"].validation_context.trusted_ca.inline_string,
    )


async def _next_version(store: SecretStore, after: int) -> None:
    async with asyncio.timeout(15):
        while store.current is None or store.current.version <= after:
            await store.changed()


async def test_a_roots_change_re_signs_at_once_under_the_new_root_with_a_new_key() -> None:
    server = StandIn(dt.timedelta(hours=1))
    store = SecretStore()
    client = AsyncClient("127.0.0.1:8500", token="t", transport=MockTransport(server))
    identity = WorkloadIdentity(client, "web", "default", "dc1", store)
    await identity.start()
    first, first_key, first_roots = _leaf(store)
    assert first_roots == server.roots[0].cert_pem
    stop = asyncio.Event()
    task = asyncio.create_task(identity.run(stop))
    try:
        server.active = 1
        server.rotated.set()
        await _next_version(store, 1)
    finally:
        stop.set()
        await task
    second, second_key, second_roots = _leaf(store)
    assert second_roots == server.roots[1].cert_pem and second_key != first_key
    assert second.serial_number != first.serial_number
    issuer = x509.load_pem_x509_certificate(server.roots[1].cert_pem.encode()).subject
    assert second.issuer == issuer
    sent = b"".join(server.bodies)
    assert b"PRIVATE KEY" not in sent and b"CERTIFICATE REQUEST" in sent
    public = second.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = serialization.load_pem_private_key(second_key.encode(), None)
    assert (
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == public
    )


async def test_a_short_leaf_is_renewed_at_about_half_its_remaining_life() -> None:
    server = StandIn(dt.timedelta(seconds=3))
    store = SecretStore()
    client = AsyncClient("127.0.0.1:8500", transport=MockTransport(server))
    identity = WorkloadIdentity(client, "web", "default", "dc1", store)
    await identity.start()
    now = dt.datetime.now(dt.UTC)
    assert 1.0 <= identity.renew_in(now) <= 1.6
    serial = identity.leaf.serial if identity.leaf else ""
    stop = asyncio.Event()
    task = asyncio.create_task(identity.run(stop))
    try:
        await _next_version(store, 1)
    finally:
        stop.set()
        server.rotated.set()  # release the held roots query
        await task
    assert identity.leaf is not None and identity.leaf.serial != serial


async def test_a_roots_change_while_the_proxy_is_unregistered_waits_for_its_registration() -> None:
    server = StandIn(dt.timedelta(hours=1))
    store = SecretStore()
    client = AsyncClient("127.0.0.1:8500", transport=MockTransport(server))
    identity = WorkloadIdentity(client, "web", "default", "dc1", store, proxy_id="web-proxy")
    await identity.start()
    stop = asyncio.Event()
    task = asyncio.create_task(identity.run(stop))
    try:
        server.registered = False  # a --dev server restarted empty, with a new CA
        server.active = 1
        server.rotated.set()
        async with asyncio.timeout(15), server.polled:
            await server.polled.wait_for(lambda: server.polls >= 2)  # asked twice, told 404
        assert store.current is not None and store.current.version == 1
        server.registered = True
        await _next_version(store, 1)
    finally:
        stop.set()
        await task
    assert _leaf(store)[2] == server.roots[1].cert_pem
