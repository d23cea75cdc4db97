"""Two real `loom server` processes on loopback, dc1 the primary and dc2 a secondary joined by
``--join-wan``: one trust domain, dc2's leaves signed by an intermediate dc1's root signed.

A dc2 leaf's chain verifies against dc1's roots by ``cryptography``'s path building and in a
real TLS handshake (Python ``ssl`` on both ends, each trusting only the other datacenter's
roots, the SPIFFE IDs checked); a real Envoy in dc2 (``loom dataplane``) serves that chain on
its public listener to a client trusting dc1's roots; a root rotation in dc1 gives dc2 a new
intermediate under the new root, its Envoy a new leaf, and a connection opened before the
rotation keeps working. The attacker's attempts at the primary's signing endpoint (no token,
a service's token, requests it must not sign) are refused and sign nothing. A secondary whose
primary has not answered yet answers 503 and its dataplane waits, then comes up; a restarted
secondary signs with the intermediate in its store while the primary is away.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.verification import PolicyBuilder, Store

from loom.ca.csr import build_ca_csr, build_csr, new_key
from loom.ca.spiffe import SpiffeId
from tests.support.leaks import hand_over
from tests.support.mesh import (
    Proc,
    curl,
    envoy_admin,
    free_port,
    start_dataplane,
    start_echo,
    wait_for,
)
from tests.support.pki import ScratchCA
from tests.support.server import ServerProcess, acl_flags, start_server

ROOT = str(uuid.uuid4())
SIGN = "/v1/internal/connect/ca/sign-intermediate"


class Federation:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.servers: list[ServerProcess] = []
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.dc1 = start_server("--datacenter", "dc1", *acl_flags(ROOT))
        self.servers.append(self.dc1)
        self.replication = self._token("replication", 'operator = "write"')
        self.service_token = self._token("web", 'service "web" { policy = "write" }')
        self.dc2 = start_server(
            "--datacenter", "dc2", "--primary-datacenter", "dc1",
            "--join-wan", self.dc1.http, "--acl-replication-token", self.replication,
        )  # fmt: skip
        self.servers.append(self.dc2)
        wait_for(lambda: self.dc2.request("GET", "/v1/connect/ca/roots")[0] == 200, 30,
                 "dc2's CA federated with dc1's")  # fmt: skip

    def _token(self, name: str, rules: str) -> str:
        mgmt = {"X-Consul-Token": ROOT}
        status, _, _ = self.dc1.request("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules},
                                        mgmt)  # fmt: skip
        assert status == 200
        status, token, _ = self.dc1.request(
            "PUT", "/v1/acl/token", {"Policies": [{"Name": name}]}, mgmt
        )
        assert status == 200
        return str(token["SecretID"])

    def dc1_get(self, path: str) -> Any:
        status, body, _ = self.dc1.request("GET", path, headers={"X-Consul-Token": ROOT})
        assert status == 200, (path, status, body)
        return body

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        for s in reversed(self.servers):
            s.stop()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = Federation(tmp_path_factory.mktemp("fedca"))
    try:
        yield f
    finally:
        f.close()


def _roots_pem(server: ServerProcess) -> str:
    return "".join(r["RootCert"] for r in server.get("/v1/connect/ca/roots")["Roots"])


def _verify(chain_pem: str, trusted_pem: str) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(chain_pem.encode())
    roots = x509.load_pem_x509_certificates(trusted_pem.encode())
    verifier = (
        PolicyBuilder().store(Store(roots)).time(dt.datetime.now(dt.UTC)).build_client_verifier()
    )
    return list(verifier.verify(certs[0], certs[1:]).chain)


def _uri(cert: dict[str, Any]) -> str:
    uris = [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]
    assert len(uris) == 1, cert
    return str(uris[0])


def _files(where: Path, name: str, issued: dict[str, Any]) -> tuple[Path, Path]:
    cert, key = where / f"{name}.pem", where / f"{name}-key.pem"
    cert.write_text(issued["CertPEM"])
    key.write_text(issued["PrivateKeyPEM"])
    key.chmod(0o600)
    return cert, key


def _client(trusted_pem: str, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # mesh peers are named by SPIFFE URI, checked below
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=trusted_pem)
    ctx.load_cert_chain(cert, key)
    return ctx


# -- the secondary's CA is the primary's trust domain and roots ----------------------------------


def test_dc2_lists_dc1s_roots_and_trust_domain(fed: Federation) -> None:
    one, two = fed.dc1.get("/v1/connect/ca/roots"), fed.dc2.get("/v1/connect/ca/roots")
    assert two["TrustDomain"] == one["TrustDomain"]
    assert two["ActiveRootID"] == one["ActiveRootID"]
    assert [r["ID"] for r in two["Roots"]] == [r["ID"] for r in one["Roots"]]
    intermediate = x509.load_pem_x509_certificate(two["Roots"][0]["IntermediateCerts"][0].encode())
    root = x509.load_pem_x509_certificate(one["Roots"][0]["RootCert"].encode())
    intermediate.verify_directly_issued_by(root)


def test_a_dc2_leaf_chain_verifies_against_dc1s_roots_by_path_building(fed: Federation) -> None:
    leaf = fed.dc2.get("/v1/agent/connect/ca/leaf/web")
    chain = _verify(leaf["CertPEM"], _roots_pem(fed.dc1))
    assert len(chain) == 3  # the leaf, dc2's intermediate, dc1's root
    td = fed.dc1.get("/v1/connect/ca/roots")["TrustDomain"]
    assert leaf["ServiceURI"] == f"spiffe://{td}/ns/default/dc/dc2/svc/web"
    # A CSR's leaf (the dataplane's path) carries the same chain.
    csr = build_csr(SpiffeId.of(td, "default", "dc2", "web"), new_key())
    signed = fed.dc2.put("/v1/loom/connect/ca/sign", {"CSR": csr})
    assert len(_verify(signed["CertPEM"], _roots_pem(fed.dc1))) == 3


def test_a_dc1_client_and_a_dc2_server_complete_a_mutual_tls_handshake(
    fed: Federation, tmp_path: Path
) -> None:
    td = fed.dc1.get("/v1/connect/ca/roots")["TrustDomain"]
    server_cert, server_key = _files(tmp_path, "web", fed.dc2.get("/v1/agent/connect/ca/leaf/web"))
    client_cert, client_key = _files(tmp_path, "api", fed.dc1_get("/v1/agent/connect/ca/leaf/api"))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cadata=_roots_pem(fed.dc2))  # dc2 trusts the same roots
    server_ctx.load_cert_chain(server_cert, server_key)
    client_ctx = _client(_roots_pem(fed.dc1), client_cert, client_key)
    seen: dict[str, str] = {}

    def serve(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen["client"] = _uri(tls.getpeercert())
            tls.sendall(b"ok")

    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=serve, args=(listener,))
        thread.start()
        try:
            port = listener.getsockname()[1]
            with (
                socket.create_connection(("127.0.0.1", port), 5) as raw,
                client_ctx.wrap_socket(raw) as tls,
            ):
                assert _uri(tls.getpeercert()) == f"spiffe://{td}/ns/default/dc/dc2/svc/web"
                assert tls.recv(2) == b"ok"
        finally:
            thread.join(10)
    assert seen["client"] == f"spiffe://{td}/ns/default/dc/dc1/svc/api"


# -- a real Envoy in dc2 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar(fed: Federation) -> Iterator[tuple[int, Path]]:
    app, public = free_port(), free_port()
    echo = start_echo(fed.tmp, "hello from dc2", app, "dc2")
    fed.procs.append(echo)
    hand_over(echo.p.pid)
    fed.dc2.put("/v1/agent/service/register", {
        "Name": "web", "Port": app, "Connect": {"SidecarService": {"Port": public}}})  # fmt: skip
    proc = start_dataplane(fed.tmp, "web-sidecar-proxy", fed.dc2.http, fed.dc2.grpc)
    fed.procs.append(proc)
    hand_over(proc.p.pid)
    assert proc.work is not None
    work = proc.work
    wait_for(lambda: (work / "ready").exists(), 60, "dc2's Envoy ready")
    yield public, work


@pytest.fixture(scope="module")
def client_sidecar(fed: Federation, sidecar: tuple[int, Path]) -> int:
    """A second Envoy in dc2, ``api``, whose upstream ``web`` is the first: Envoy (BoringSSL)
    on both ends verifying chains of dc2's intermediate against dc1's roots."""
    upstream = free_port()
    fed.dc2.put("/v1/agent/service/register", {
        "Name": "api", "Port": free_port(), "Connect": {"SidecarService": {"Port": free_port(),
        "Proxy": {"Upstreams": [{"DestinationName": "web", "LocalBindPort": upstream}]}}}})  # fmt: skip
    proc = start_dataplane(fed.tmp, "api-sidecar-proxy", fed.dc2.http, fed.dc2.grpc)
    fed.procs.append(proc)
    hand_over(proc.p.pid)
    wait_for(lambda: curl(f"http://127.0.0.1:{upstream}/")[1] == "hello from dc2\n", 60,
             "api -> web through both Envoys of dc2")  # fmt: skip
    return upstream


def _mesh_client(fed: Federation, tmp: Path, trusted_pem: str) -> ssl.SSLContext:
    cert, key = _files(tmp, "api", fed.dc1_get("/v1/agent/connect/ca/leaf/api"))
    return _client(trusted_pem, cert, key)


def _request(tls: ssl.SSLSocket) -> str:
    tls.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    data = b""
    while b"hello from dc2" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


@pytest.mark.envoy
def test_a_client_trusting_dc1s_roots_reaches_dc2s_sidecar_over_mtls(
    fed: Federation, sidecar: tuple[int, Path], tmp_path: Path
) -> None:
    public, _ = sidecar
    td = fed.dc1.get("/v1/connect/ca/roots")["TrustDomain"]
    ctx = _mesh_client(fed, tmp_path, _roots_pem(fed.dc1))
    with socket.create_connection(("127.0.0.1", public), 5) as raw, ctx.wrap_socket(raw) as tls:
        assert _uri(tls.getpeercert()) == f"spiffe://{td}/ns/default/dc/dc2/svc/web"
        assert "hello from dc2" in _request(tls)
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        issuer = x509.load_der_x509_certificate(der).issuer.rfc4514_string()
        assert issuer.startswith("CN=Loom Intermediate CA")  # Envoy sent the intermediate too


@pytest.mark.envoy
def test_an_envoy_accepts_the_chain_of_another_envoy_of_dc2(client_sidecar: int) -> None:
    assert curl(f"http://127.0.0.1:{client_sidecar}/") == (0, "hello from dc2\n")


@pytest.mark.envoy
def test_a_rotation_in_dc1_reaches_dc2_and_an_open_connection_stays_up(
    fed: Federation, sidecar: tuple[int, Path], client_sidecar: int, tmp_path: Path
) -> None:
    public, work = sidecar
    old_roots = _roots_pem(fed.dc1)
    ctx = _mesh_client(fed, tmp_path, old_roots)
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(socket.create_connection(("127.0.0.1", public), 5))
        before = stack.enter_context(ctx.wrap_socket(raw))
        assert "hello from dc2" in _request(before)
        serials = _leaf_serials(work)
        new = ScratchCA(tmp_path, "Rotated Root")
        config = {"PrivateKey": new.key_pem, "RootCert": new.cert_pem}
        status, body, _ = fed.dc1.request(
            "PUT", "/v1/connect/ca/configuration",
            {"Provider": "consul", "Config": config}, {"X-Consul-Token": ROOT},
        )  # fmt: skip
        assert status == 200, body
        new_id = fed.dc1.get("/v1/connect/ca/roots")["ActiveRootID"]
        wait_for(lambda: fed.dc2.get("/v1/connect/ca/roots")["ActiveRootID"] == new_id, 30,
                 "dc2 following dc1's new root")  # fmt: skip
        roots = fed.dc2.get("/v1/connect/ca/roots")
        intermediate = x509.load_pem_x509_certificate(
            roots["Roots"][0]["IntermediateCerts"][0].encode()
        )
        intermediate.verify_directly_issued_by(new.cert)  # under the new root
        wait_for(lambda: bool(_leaf_serials(work) - serials), 30,
                 "dc2's Envoy holding a leaf of the new intermediate")  # fmt: skip
        # The connection opened before the rotation still carries requests.
        assert "hello from dc2" in _request(before)
    # Envoy to Envoy, both on leaves of the new intermediate.
    assert curl(f"http://127.0.0.1:{client_sidecar}/") == (0, "hello from dc2\n")
    # New connections verify against the new roots, and against the retired root alone.
    for trusted in (_roots_pem(fed.dc1), new.cert_pem, old_roots):
        ctx = _mesh_client(fed, tmp_path, trusted)
        with (
            socket.create_connection(("127.0.0.1", public), 5) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            assert "hello from dc2" in _request(tls)


def _leaf_serials(work: Path) -> set[int]:
    """Serial numbers of the SPIFFE leaves the sidecar's Envoy holds (admin ``/certs``)."""
    out = set()
    for entry in json.loads(envoy_admin(work, "/certs"))["certificates"]:
        for chain in entry.get("cert_chain", []):
            if any(n.get("uri", "").startswith("spiffe://") for n in chain["subject_alt_names"]):
                out.add(int(chain["serial_number"], 16))
    return out


# -- the attacker at the primary's signing endpoint ----------------------------------------------


SIGNED = "signed an intermediate CA"
"""dc1's log line for each intermediate it signs."""


def _sign(fed: Federation, body: bytes, token: str | None) -> tuple[int, Any]:
    """One signing request to dc1; the count of intermediates it signed moves only on 200."""
    headers = {"X-Consul-Token": token} if token is not None else {}
    before = fed.dc1.log_text().count(SIGNED)
    status, out, _ = fed.dc1.request("POST", SIGN, body, headers)
    after = fed.dc1.log_text().count(SIGNED)  # logged before the answer is sent
    assert after == before + (1 if status == 200 else 0), (status, out)
    return status, out


def _trust_domain(fed: Federation) -> str:
    return str(fed.dc1.get("/v1/connect/ca/roots")["TrustDomain"])


@pytest.mark.parametrize("who", ["no token", "a service token", "a made-up token"])
def test_sign_intermediate_without_operator_write_is_refused_and_signs_nothing(
    fed: Federation, who: str
) -> None:
    token = {"no token": None, "a service token": fed.service_token,
             "a made-up token": str(uuid.uuid4())}[who]  # fmt: skip
    csr = build_ca_csr(_trust_domain(fed), new_key()).encode()
    status, out = _sign(fed, csr, token)
    assert status == 403, out
    assert "CERTIFICATE" not in json.dumps(out)


def _ca_csr(uri: str, ca: bool = True, path_length: int | None = 0) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    builder = builder.add_extension(
        x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
    )
    return builder.sign(new_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("another trust domain", "is not this CA's"),
        ("a leaf request", "not a CA request"),
        ("path length 1", "path length 1"),
        ("no path length", "path length no limit"),
        ("a service's SPIFFE ID", "spiffe://<trust-domain>"),
        ("not a CSR", "exactly one PEM"),
    ],
)
def test_sign_intermediate_refuses_a_request_it_must_not_sign(
    fed: Federation, case: str, message: str
) -> None:
    td = _trust_domain(fed)
    body = {
        "another trust domain": lambda: _ca_csr("spiffe://other.consul"),
        "a leaf request": lambda: _ca_csr(f"spiffe://{td}", ca=False),
        "path length 1": lambda: _ca_csr(f"spiffe://{td}", path_length=1),
        "no path length": lambda: _ca_csr(f"spiffe://{td}", path_length=None),
        "a service's SPIFFE ID": lambda: _ca_csr(f"spiffe://{td}/ns/default/dc/dc2/svc/web"),
        "not a CSR": lambda: b"hello",
    }[case]()
    status, out = _sign(fed, body, fed.replication)
    assert status == 400, out
    assert message in str(out)


def test_sign_intermediate_with_the_replication_token_signs_a_ca_of_path_length_zero(
    fed: Federation,
) -> None:
    status, out = _sign(fed, build_ca_csr(_trust_domain(fed), new_key()).encode(), fed.replication)
    assert status == 200, out
    cert = x509.load_pem_x509_certificate(out["IntermediatePEM"].encode())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert out["ActiveRootID"] == fed.dc1.get("/v1/connect/ca/roots")["ActiveRootID"]


def test_dc2_refuses_to_sign_intermediates(fed: Federation) -> None:
    status, out, _ = fed.dc2.request(
        "POST", SIGN, build_ca_csr(_trust_domain(fed), new_key()).encode()
    )
    assert status == 400 and "only the primary signs" in str(out)


# -- before the primary answers ------------------------------------------------------------------


@pytest.mark.envoy
def test_a_secondary_that_cannot_reach_its_primary_answers_503_and_its_dataplane_waits(
    tmp_path: Path,
) -> None:
    port = free_port()
    dc3 = start_server("--datacenter", "dc3", "--primary-datacenter", "dc9",
                       "--join-wan", f"127.0.0.1:{port}")  # fmt: skip
    dc9: ServerProcess | None = None
    dataplane: Proc | None = None
    try:
        for path in ("/v1/connect/ca/roots", "/v1/agent/connect/ca/leaf/web"):
            status, out, _ = dc3.request("GET", path)
            assert status == 503, (path, out)
            assert out == "CA is not yet initialized: waiting for the primary datacenter dc9\n"
        csr = build_csr(SpiffeId.of("x.consul", "default", "dc3", "web"), new_key())
        status, out, _ = dc3.request("PUT", "/v1/loom/connect/ca/sign", {"CSR": csr})
        assert status == 503, out
        dc3.put("/v1/agent/service/register", {
            "Name": "web", "Port": free_port(),
            "Connect": {"SidecarService": {"Port": free_port()}}})  # fmt: skip
        dataplane = start_dataplane(tmp_path, "web-sidecar-proxy", dc3.http, dc3.grpc)
        hand_over(dataplane.p.pid)
        proc = dataplane
        wait_for(lambda: "cannot get a certificate for web yet" in proc.output(), 30,
                 "the dataplane waiting for dc3's CA")  # fmt: skip
        assert proc.alive()
        dc9 = ServerProcess(["--dev", "--datacenter", "dc9", "--http-addr", f"127.0.0.1:{port}",
                             "--grpc-addr", "127.0.0.1:0"]).start()  # fmt: skip
        wait_for(lambda: dc3.request("GET", "/v1/connect/ca/roots")[0] == 200, 60,
                 "dc3 federated once dc9 answers")  # fmt: skip
        leaf = dc3.get("/v1/agent/connect/ca/leaf/web")
        assert len(_verify(leaf["CertPEM"], _roots_pem(dc9))) == 3
        assert proc.work is not None
        work = proc.work
        wait_for(lambda: (work / "ready").exists(), 60, "the waiting dataplane's Envoy ready")
    finally:
        if dataplane is not None:
            dataplane.stop()
        if dc9 is not None:
            dc9.stop()
        dc3.stop()


def test_a_restarted_secondary_signs_with_its_stored_intermediate_while_the_primary_is_away(
    tmp_path: Path,
) -> None:
    dc8 = start_server("--datacenter", "dc8")
    args = ("--datacenter", "dc7", "--primary-datacenter", "dc8", "--join-wan", dc8.http)
    dc7 = start_server(*args, data_dir=tmp_path / "dc7")
    try:
        wait_for(lambda: dc7.request("GET", "/v1/connect/ca/roots")[0] == 200, 30,
                 "dc7 federated with dc8")  # fmt: skip
        roots = dc7.get("/v1/connect/ca/roots")
        trusted = _roots_pem(dc8)
        dc8.stop()
        dc7.stop()
        dc7 = start_server(*args, data_dir=tmp_path / "dc7")
        assert dc7.get("/v1/connect/ca/roots") == roots  # from its store, no primary asked
        leaf = dc7.get("/v1/agent/connect/ca/leaf/web")
        assert len(_verify(leaf["CertPEM"], trusted)) == 3
        assert leaf["CertPEM"].endswith(roots["Roots"][0]["IntermediateCerts"][0])
    finally:
        dc7.stop()
        dc8.stop()
