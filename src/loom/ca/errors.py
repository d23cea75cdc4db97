"""The CA package's one exception root (its own module, so ``spiffe`` and ``csr`` need not
import the signing code to raise it)."""

from __future__ import annotations

from loom.errors import LoomError


class CAError(LoomError):
    """The CA material is unusable (corrupt PEM, mismatched key), or an identity, CSR or
    SPIFFE ID is not one this CA would issue."""


class CaNotInitialized(CAError):
    """A secondary datacenter's CA has no intermediate from the primary yet: try again."""
