"""The server side of TLS: certificate files, the HTTPS SSL context, the gRPC credentials.

``prepare_tls`` runs once at start when an HTTPS or TLS gRPC listener is asked for. With the
operator's files (``--tls-cert-file``/``--tls-key-file``) it loads them; otherwise it has the
built-in CA issue a server certificate (``loom.ca.servertls``) and writes it, its key (0600)
and the CA roots clients should trust (``ca.pem``) into ``<data-dir>/tls`` (0700), or into a
private temporary directory removed at exit when there is no data dir (``--dev``, etcd).
Python's ``ssl`` loads certificates from files only, hence the files. With
``--tls-verify-incoming`` both listeners require a client certificate signed by
``--tls-ca-file`` (default: the built-in CA's roots).

Every failure (unreadable or mismatched files) is a ``ServerTlsError`` naming the file.
"""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from loom.ca.errors import CAError
from loom.ca.servertls import issue_server_cert, server_names
from loom.control.state import State
from loom.filemodes import private_dir, write_private
from loom.server.errors import ServerError


class ServerTlsError(ServerError):
    """The TLS listeners cannot be set up (files missing, unreadable, not matching)."""


@dataclass
class ServingTls:
    """What the TLS listeners serve with; ``close`` removes a temporary directory."""

    ssl_context: ssl.SSLContext
    """Server context of the HTTPS listeners."""
    grpc_credentials: Any
    """``grpc.ServerCredentials`` of the TLS xDS listeners."""
    ca_file: Path | None
    """The CA roots written for clients (built-in certificate only), else None."""
    names: tuple[str, ...]
    """SANs of the built-in certificate (empty with the operator's files)."""
    verify_incoming: bool
    """Client certificates are required."""
    cert_file: Path | None = None
    """The certificate presented (also to other datacenters' servers, as a client)."""
    key_file: Path | None = None
    """Its private key."""
    temp_dir: Path | None = None

    def close(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerTlsError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def prepare_tls(state: State) -> ServingTls:
    settings = state.settings
    tls = settings.tls
    temp_dir: Path | None = None
    ca_out: Path | None = None
    names: tuple[str, ...] = ()
    if tls.builtin:
        names = server_names(settings.node, settings.datacenter, tls)
        try:
            cert = issue_server_cert(state.certs.root, names, dt.datetime.now(dt.UTC))
        except CAError as exc:
            raise ServerTlsError(str(exc)) from exc
        if settings.data_dir is not None:
            where = private_dir(settings.data_dir / "tls")
        else:
            where = temp_dir = Path(tempfile.mkdtemp(prefix="loom-tls-"))  # 0700
        try:
            cert_file = write_private(where / "server.pem", cert.cert_pem.encode())
            key_file = write_private(where / "server-key.pem", cert.key_pem.encode())
            ca_out = write_private(where / "ca.pem", state.certs.local_roots_pem.encode())
            ca_out.chmod(0o644)  # public; the directory still keeps other users out
        except OSError as exc:
            raise ServerTlsError(f"cannot write the server certificate in {where}: {exc}") from exc
    else:
        assert tls.cert_file is not None
        if tls.key_file is None:
            raise ServerTlsError("--tls-cert-file needs --tls-key-file")
        cert_file, key_file = tls.cert_file, tls.key_file
    cert_bytes, key_bytes = _read(cert_file, "the certificate"), _read(key_file, "the key")
    client_ca: bytes | None = None
    if tls.verify_incoming:
        if tls.ca_file is not None:
            client_ca = _read(tls.ca_file, "the CA file")
        else:
            client_ca = state.certs.roots_pem.encode()
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_file, key_file)
        if client_ca is not None:
            context.load_verify_locations(cadata=client_ca.decode())
            context.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise ServerTlsError(f"cannot use {cert_file} and {key_file}: {exc}") from exc
    credentials = grpc.ssl_server_credentials(
        [(key_bytes, cert_bytes)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
    return ServingTls(
        context, credentials, ca_out, names, client_ca is not None, cert_file, key_file, temp_dir
    )


def wan_client_context(state: State, serving: ServingTls | None) -> ssl.SSLContext:
    """What this server verifies other datacenters' HTTPS servers with, and presents to them.

    The peers are trusted through ``--tls-ca-file`` when given (Consul's ``tls.defaults.
    ca_file``, which verifies outgoing connections too); else, with the built-in certificate,
    through this datacenter's own CA roots (what that certificate chains to: enough for the
    servers of one datacenter, not for another datacenter's built-in CA); else (the
    operator's certificate, or no TLS listener) through the system's CAs. The peer's name
    must be in its certificate (the host dialed). This server's certificate goes along, for
    a peer that requires client certificates (``--tls-verify-incoming``)."""
    tls = state.settings.tls
    try:
        # Not create_default_context: a given CA must be the only one trusted, not one more
        # beside the system's. PROTOCOL_TLS_CLIENT verifies the chain and the host name.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.ca_file is not None:
            context.load_verify_locations(cadata=_read(tls.ca_file, "the CA file").decode())
        elif serving is not None and serving.ca_file is not None:
            context.load_verify_locations(cadata=state.certs.local_roots_pem)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if serving is not None and serving.cert_file is not None and serving.key_file is not None:
            context.load_cert_chain(serving.cert_file, serving.key_file)
    except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
        raise ServerTlsError(f"cannot set up TLS to other datacenters: {exc}") from exc
    return context
