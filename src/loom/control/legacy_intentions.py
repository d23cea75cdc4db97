"""The legacy intention API by ID: create with a UUID, then read, update, delete by it.

Since Consul 1.9 an intention is a source of its destination's ``service-intentions`` entry;
one created by ``POST /v1/connect/intentions`` gets a UUID kept in that source's
``LegacyID``, which the by-ID endpoints look up. Consul's rules, kept here:

- a second intention for the same source and destination is refused (``duplicate
  intention found``), whether the first was made by ID, by name or in a config entry;
- an update may change the source, action, description and permissions, but not the
  destination (``Cannot modify DestinationNS or DestinationName...``);
- an unknown ID is ``Intention not found`` (404), a malformed one a 400 naming the UUID.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from loom.control.configs import Configs
from loom.control.errors import Conflict, NotFound
from loom.domain.config_entries import validate_entry, validate_source
from loom.domain.entries import SERVICE_INTENTIONS, IntentionSource, ServiceIntentions
from loom.domain.fields import Fields, ValidationError
from loom.domain.intentions import Intention

NOT_FOUND = "Intention not found"
FIXED_DESTINATION = (
    "Cannot modify DestinationNS or DestinationName for an intention once it exists."
)


def check_uuid(raw: str) -> str:
    """``raw`` as a canonical UUID, or a 400 naming it."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ValidationError(f"intention ID: {raw!r} is not a valid UUID") from None


def _refs(body: Any) -> tuple[tuple[str, str], tuple[str, str], Fields]:
    """((source ns, name), (destination ns, name)) of a legacy intention body."""
    f = Fields(body, "")
    src = (f.text("SourceNS", "default") or "default", f.text("SourceName", required=True))
    dst = (
        f.text("DestinationNS", "default") or "default",
        f.text("DestinationName", required=True),
    )
    return src, dst, f


def _source(body: Any, src: tuple[str, str], where: str, legacy_id: str) -> IntentionSource:
    """The entry source a legacy body describes (validated as ``/v1/config`` would)."""
    doc: dict[str, Any] = {"Name": src[1], "Namespace": src[0]}
    for key in ("Action", "Description", "Permissions"):
        if isinstance(body, dict) and body.get(key) not in (None, ""):
            doc[key] = body[key]
    if isinstance(doc.get("Action"), str):
        doc["Action"] = doc["Action"].lower()
    return replace(validate_source(doc, where), legacy_id=legacy_id)


def _entry(configs: Configs, ns: str, name: str) -> ServiceIntentions:
    found = configs.get(SERVICE_INTENTIONS, name, ns)
    if isinstance(found, ServiceIntentions):
        return found
    validate_entry({"Kind": SERVICE_INTENTIONS, "Name": name, "Namespace": ns})
    return ServiceIntentions(name=name, namespace=ns)


def _duplicate(src: tuple[str, str], dst: tuple[str, str]) -> Conflict:
    return Conflict(f"duplicate intention found: {src[0]}/{src[1]} => {dst[0]}/{dst[1]}")


def find(configs: Configs, intention_id: str) -> Intention | None:
    wanted = check_uuid(intention_id)
    return next((i for i in configs.intentions() if i.id == wanted), None)


def _holder(configs: Configs, intention_id: str) -> tuple[ServiceIntentions, int]:
    """The entry holding the intention and the index of its source; NotFound otherwise."""
    wanted = check_uuid(intention_id)
    for entry in configs.intention_entries():
        for n, s in enumerate(entry.sources):
            if s.legacy_id == wanted:
                return entry, n
    raise NotFound(NOT_FOUND)


ATTEMPTS = 10
"""Each change is a check-and-set on its entry's ModifyIndex, retried when another write to
the same entry came between the read and the write (no lost update)."""


async def _write(
    configs: Configs, old: ServiceIntentions, sources: tuple[IntentionSource, ...]
) -> bool:
    cas = old.modify_index
    if sources:
        return await configs.write_entry(replace(old, sources=sources), cas)
    return await configs.delete(SERVICE_INTENTIONS, old.name, old.namespace, cas)


async def create(configs: Configs, body: Any) -> str:
    """Add the intention; its new UUID."""
    src, dst, _ = _refs(body)
    new_id = str(uuid.uuid4())
    for _ in range(ATTEMPTS):
        entry = _entry(configs, *dst)
        if any((s.namespace, s.name) == src for s in entry.sources):
            raise _duplicate(src, dst)
        source = _source(body, src, f"Sources[{len(entry.sources)}]", new_id)
        if await _write(configs, entry, (*entry.sources, source)):
            return new_id
    raise Conflict("the intention's entry kept changing; try again")


async def update(configs: Configs, intention_id: str, body: Any) -> str:
    src, dst, _ = _refs(body)
    for _ in range(ATTEMPTS):
        entry, n = _holder(configs, intention_id)
        if dst != (entry.namespace, entry.name):
            raise ValidationError(FIXED_DESTINATION)
        if any((s.namespace, s.name) == src for k, s in enumerate(entry.sources) if k != n):
            raise _duplicate(src, dst)
        source = _source(body, src, f"Sources[{n}]", entry.sources[n].legacy_id)
        if await _write(configs, entry, (*entry.sources[:n], source, *entry.sources[n + 1 :])):
            return source.legacy_id
    raise Conflict("the intention's entry kept changing; try again")


async def delete(configs: Configs, intention_id: str) -> None:
    for _ in range(ATTEMPTS):
        entry, n = _holder(configs, intention_id)
        if await _write(configs, entry, tuple(s for k, s in enumerate(entry.sources) if k != n)):
            return
    raise Conflict("the intention's entry kept changing; try again")


__all__ = ["FIXED_DESTINATION", "NOT_FOUND", "check_uuid", "create", "delete", "find", "update"]
