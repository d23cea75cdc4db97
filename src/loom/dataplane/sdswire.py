"""The few protobuf messages the agent's SDS server speaks, encoded and decoded by hand.

The agent serves Envoy exactly two ``Secret`` resources and reads ``DiscoveryRequest``s; the
protobuf runtime, the generated Envoy modules and grpcio cost the agent about 12 MB of RSS
(issue 17: the agent <= 30 MB), for messages of five fields. Protobuf's wire format is simple
(a field is its number and wire type as a varint, then a varint or a length and bytes), so
this module writes ``DiscoveryResponse`` with ``Any``-packed ``Secret``s and reads
``DiscoveryRequest`` (skipping the fields it does not need, such as ``node``) itself.

The secrets are encoded from the translator's canonical dicts (``loom.xds.translate.tls
.secrets``) through a schema of field numbers, so their shape stays defined in one place; a
key the schema does not know is an error, never silently dropped. The field numbers are
Envoy's v3 API (``secret.proto``, ``common.proto``, ``base.proto``, ``discovery.proto``) and
``google/rpc/status.proto``; tests/unit/test_dataplane_sdswire.py checks both directions
against the real protobuf runtime. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from loom.dataplane.errors import DataplaneError

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

Schema = Mapping[str, tuple[int, "Schema | None"]]
"""A message's fields: name -> (number, schema of the sub-message, or None for a string)."""

DATA_SOURCE: Schema = {"filename": (1, None), "inline_string": (3, None)}
TLS_CERTIFICATE: Schema = {"certificate_chain": (1, DATA_SOURCE), "private_key": (2, DATA_SOURCE)}
SECRET: Schema = {
    "name": (1, None),
    "tls_certificate": (2, TLS_CERTIFICATE),
    "validation_context": (4, {"trusted_ca": (1, DATA_SOURCE)}),
}


class WireError(DataplaneError):
    """A message could not be encoded (a field the schema lacks) or decoded (malformed)."""


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | LENGTH) + varint(len(payload)) + payload


def encode(doc: Mapping[str, Any], schema: Schema) -> bytes:
    """``doc`` (strings and sub-dicts) as the message ``schema`` describes, fields in order."""
    fields = []
    for name, value in doc.items():
        if name not in schema:
            raise WireError(f"no field {name!r} in the SDS wire schema")
        number, sub = schema[name]
        if sub is None:
            if not isinstance(value, str):
                raise WireError(f"field {name!r} must be a string, not {type(value).__name__}")
            fields.append((number, value.encode()))
        else:
            if not isinstance(value, Mapping):
                raise WireError(f"field {name!r} must be a message, not {type(value).__name__}")
            fields.append((number, encode(value, sub)))
    return b"".join(_field(n, payload) for n, payload in sorted(fields))


def pack_any(type_url: str, message: bytes) -> bytes:
    """A ``google.protobuf.Any`` holding ``message``."""
    return _field(1, type_url.encode()) + _field(2, message)


def discovery_response(version: str, resources: list[bytes], type_url: str, nonce: str) -> bytes:
    """A ``DiscoveryResponse``; ``resources`` are encoded ``Any`` messages."""
    return (
        _field(1, version.encode())
        + b"".join(_field(2, r) for r in resources)
        + _field(4, type_url.encode())
        + _field(5, nonce.encode())
    )


@dataclass(frozen=True)
class DiscoveryRequest:
    """The fields of a ``DiscoveryRequest`` the SDS server reads."""

    version_info: str = ""
    resource_names: tuple[str, ...] = ()
    type_url: str = ""
    response_nonce: str = ""
    error_message: str | None = None
    """``error_detail.message`` when Envoy NACKs (None: no ``error_detail``, an ACK or ask)."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(number, wire type, value)`` of each field; a length-delimited value as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, kind = key >> 3, key & 7
        value: int | bytes
        if kind == VARINT:
            value, pos = _read_varint(data, pos)
        elif kind == LENGTH:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise WireError("truncated length-delimited field")
            value, pos = data[pos : pos + size], pos + size
        elif kind in (FIXED64, FIXED32):
            width = 8 if kind == FIXED64 else 4
            if pos + width > len(data):
                raise WireError("truncated fixed-width field")
            value, pos = int.from_bytes(data[pos : pos + width], "little"), pos + width
        else:
            raise WireError(f"unsupported wire type {kind} (field {number})")
        yield number, kind, value


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise WireError("a string field is not length-delimited")
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise WireError("a string field is not UTF-8") from exc


def decode_request(data: bytes) -> DiscoveryRequest:
    """A ``DiscoveryRequest`` (``node`` and the other fields not read are skipped)."""
    version = type_url = nonce = ""
    names: list[str] = []
    error: str | None = None
    for number, _, value in fields(data):
        if number == 1:
            version = _text(value)
        elif number == 3:
            names.append(_text(value))
        elif number == 4:
            type_url = _text(value)
        elif number == 5:
            nonce = _text(value)
        elif number == 6:
            if not isinstance(value, bytes):
                raise WireError("error_detail is not a message")
            error = next((_text(v) for n, _, v in fields(value) if n == 2), "")
    return DiscoveryRequest(version, tuple(names), type_url, nonce, error)
