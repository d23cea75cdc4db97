"""The CA configuration (``/v1/connect/ca/configuration``): leaf lifetime and root rotation.

Consul's shape, provider ``consul`` only (the built-in CA): ``Config`` holds ``LeafCertTTL``,
``RotationPeriod`` and ``IntermediateCertTTL`` as Go durations; ``ForceWithoutCrossSigning``
turns off the cross-signing of a rotation. The configuration is stored
(table ``ca_config``) once someone writes it; until then it is the server's defaults
(``--leaf-ttl``). A write that sets ``LeafCertTTL`` applies to leaves issued from then on
(cached leaves keep their life until they are renewed, as Consul's agents do). A write with
``PrivateKey`` and ``RootCert`` rotates the root: ``loom.control.certs.Certs.rotate`` makes it
the active root, keeps the old one among the roots until the leaves it signed expire, and
cross-signs the new root with the old one.

Validation happens before anything is written: a bad body changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from loom.control.certs import Certs
from loom.domain.fields import Fields, ValidationError, parse_duration
from loom.store import Op, Store, put
from loom.store.tables import CA_CONFIG

Doc = dict[str, Any]

PROVIDER = "consul"
"""The only provider: the built-in CA."""

MIN_LEAF_TTL = dt.timedelta(hours=1)
MAX_LEAF_TTL = dt.timedelta(days=365)
"""Consul's bounds of ``LeafCertTTL`` (1h to 8760h)."""

DEFAULT_ROTATION_PERIOD = "2160h"
DEFAULT_INTERMEDIATE_TTL = "8760h"
"""Consul's defaults. ``RotationPeriod`` is reported, kept and validated but changes nothing
(Loom rotates on request); ``IntermediateCertTTL`` is the life of the intermediates the
primary signs for secondary datacenters (``loom.ca.intermediate``)."""

_KNOWN = {"LeafCertTTL", "RotationPeriod", "IntermediateCertTTL", "PrivateKey", "RootCert"}
"""Config keys Loom reads; others (Vault's, AWS's...) are refused by name."""


def go_duration(td: dt.timedelta) -> str:
    """A timedelta as Consul prints durations in this config (``72h``, ``90m``, ``45s``)."""
    seconds = td.total_seconds()
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class CaConfig:
    """Reads and writes the CA configuration; owns nothing but the stored document."""

    def __init__(self, store: Store, lock: asyncio.Lock, certs: Certs) -> None:
        self.store = store
        self.lock = lock
        self.certs = certs
        certs.on_config = self.apply_stored

    def apply_stored(self) -> None:
        """Give the CA the stored leaf lifetime (at start; after a write in ``update``)."""
        doc = self.store.record(CA_CONFIG, "config")
        if doc is not None and "LeafCertTTL" in doc:
            seconds = parse_duration(doc["LeafCertTTL"], "LeafCertTTL")
            self.certs.leaf_ttl = dt.timedelta(seconds=seconds)
        if doc is not None and "IntermediateCertTTL" in doc:
            seconds = parse_duration(doc["IntermediateCertTTL"], "IntermediateCertTTL")
            self.certs.intermediate_ttl = dt.timedelta(seconds=seconds)

    def read(self) -> Doc:
        """Consul's ``CAConfiguration`` JSON."""
        self.apply_stored()  # another server sharing the store may have written it
        doc = self.store.record(CA_CONFIG, "config") or {}
        index = int(doc.get("ModifyIndex", 0)) or self.store.table_index(("ca",))
        return {
            "Provider": PROVIDER,
            "Config": {
                "LeafCertTTL": go_duration(self.certs.leaf_ttl),
                "RotationPeriod": doc.get("RotationPeriod", DEFAULT_ROTATION_PERIOD),
                "IntermediateCertTTL": doc.get("IntermediateCertTTL", DEFAULT_INTERMEDIATE_TTL),
            },
            "State": None,
            "ForceWithoutCrossSigning": bool(doc.get("ForceWithoutCrossSigning", False)),
            "CreateIndex": int(doc.get("CreateIndex", index)),
            "ModifyIndex": index,
        }

    async def update(self, body: Any) -> None:
        """Apply a ``PUT`` body; ``ValidationError`` (nothing written) when it is wrong."""
        f = Fields(body, "")
        provider = f.text("Provider", required=True)
        force_without_cross = f.flag("ForceWithoutCrossSigning")
        if provider != PROVIDER:
            raise ValidationError(
                f"Provider: {provider!r} is not supported (the built-in CA is {PROVIDER!r})"
            )
        config = f.raw("Config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ValidationError("Config: expected an object")
        unknown = sorted(k for k in config if k not in _KNOWN)
        if unknown:
            raise ValidationError(f"Config: unknown field(s) {', '.join(unknown)}")
        c = Fields(config, "Config")
        leaf_text = c.text("LeafCertTTL")
        leaf_ttl = None
        if leaf_text:
            leaf_ttl = dt.timedelta(seconds=parse_duration(leaf_text, "Config.LeafCertTTL"))
            if not MIN_LEAF_TTL <= leaf_ttl <= MAX_LEAF_TTL:
                raise ValidationError(
                    f"Config.LeafCertTTL: {leaf_text!r} is out of range (1h to 8760h)"
                )
        stored: Doc = {}
        for key, default in (
            ("RotationPeriod", DEFAULT_ROTATION_PERIOD),
            ("IntermediateCertTTL", DEFAULT_INTERMEDIATE_TTL),
        ):
            text = c.text(key) or default
            parse_duration(text, f"Config.{key}")
            stored[key] = text
        key_pem, cert_pem = c.text("PrivateKey"), c.text("RootCert")
        if bool(key_pem) != bool(cert_pem):
            raise ValidationError("Config: PrivateKey and RootCert are given together")
        async with self.lock:
            old = self.store.record(CA_CONFIG, "config") or {}
            stored["LeafCertTTL"] = go_duration(leaf_ttl or self.certs.leaf_ttl)
            stored["ForceWithoutCrossSigning"] = force_without_cross
            stored["CreateIndex"] = old.get("CreateIndex", self.store.index + 1)
            stored["ModifyIndex"] = self.store.index + 1
            ops: list[Op] = [put(CA_CONFIG, "config", stored)]
            if key_pem:
                ops += self.certs.rotation_ops(cert_pem, key_pem, not force_without_cross)
            await self.store.apply(ops)
            if key_pem:
                self.certs.reload()
            self.apply_stored()
