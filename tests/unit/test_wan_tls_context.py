"""What a server trusts when it dials another datacenter's HTTPS server: the CA file it was
given and nothing else, else the CA its built-in certificate chains to; and what it presents."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from loom.ca.servertls import ServerTls
from loom.control.state import ServerSettings, State
from loom.server.tls import ServerTlsError, prepare_tls, wan_client_context
from loom.store import Store
from tests.support.pki import ScratchCA


async def _started(tls: ServerTls) -> State:
    st = State(ServerSettings(tls=tls), store=Store())
    await st.start()
    return st


@pytest.fixture
async def builtin() -> AsyncIterator[State]:
    st = await _started(ServerTls())
    yield st
    await st.close()


def _subjects(context: ssl.SSLContext) -> list[str]:
    return [dict(x[0] for x in c["subject"])["commonName"] for c in context.get_ca_certs()]


async def test_a_given_ca_file_is_the_only_ca_trusted_and_names_are_checked(
    tmp_path: Path,
) -> None:
    ca = ScratchCA(tmp_path, "WAN CA")
    st = await _started(ServerTls(ca_file=ca.file))
    try:
        context = wan_client_context(st, None)
        assert _subjects(context) == ["WAN CA"]  # not the system's CAs beside it
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    finally:
        await st.close()


async def test_the_built_in_certificate_trusts_its_own_roots_and_is_presented(
    builtin: State,
) -> None:
    serving = prepare_tls(builtin)
    try:
        context = wan_client_context(builtin, serving)
        root = x509.load_pem_x509_certificate(builtin.certs.root.cert_pem.encode())
        [trusted] = context.get_ca_certs(binary_form=True)
        assert x509.load_der_x509_certificate(trusted) == root
        assert serving.cert_file is not None and serving.cert_file.exists()
    finally:
        serving.close()


async def test_an_unreadable_ca_file_stops_the_start_with_its_name(tmp_path: Path) -> None:
    st = await _started(ServerTls(ca_file=tmp_path / "missing.pem"))
    try:
        with pytest.raises(ServerTlsError, match=r"missing\.pem"):
            wan_client_context(st, None)
    finally:
        await st.close()
