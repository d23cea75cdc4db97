"""The agent's key maker: a real child process makes the key and the CSR, the agent gets both
over a pipe, and ``cryptography`` is never imported into the agent for it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from loom.ca.csr import read_csr
from loom.ca.spiffe import SpiffeId
from loom.dataplane.errors import DataplaneError
from loom.dataplane.keygen import make_key_and_csr

WEB = SpiffeId.of("11111111-2222-3333-4444-555555555555.consul", "default", "dc1", "web")


async def test_the_child_makes_a_p256_key_and_a_csr_for_that_key_naming_the_identity() -> None:
    key_pem, csr_pem = await make_key_and_csr(WEB.uri)
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    csr = read_csr(csr_pem)  # verifies the self-signature too
    assert csr.identity == WEB
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert csr.csr.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)
    again, _ = await make_key_and_csr(WEB.uri)
    assert again != key_pem  # a fresh key each time


async def test_a_uri_that_is_no_spiffe_service_id_is_a_dataplane_error_naming_the_reason() -> None:
    with pytest.raises(DataplaneError, match=r"key maker failed.*SPIFFE"):
        await make_key_and_csr("https://example.com/web")


def test_making_a_key_leaves_cryptography_out_of_the_agent_process() -> None:
    script = (
        "import asyncio, json, sys\n"
        "from loom.dataplane.keygen import make_key_and_csr\n"
        f"key, csr = asyncio.run(make_key_and_csr({WEB.uri!r}))\n"
        "print(json.dumps({'ok': 'PRIVATE KEY' in key and 'REQUEST' in csr,\n"
        "                  'crypto': sorted(m for m in sys.modules if m.startswith('cryptography'))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert json.loads(done.stdout) == {"ok": True, "crypto": []}
