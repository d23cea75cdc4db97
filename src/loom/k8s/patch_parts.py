"""The ``/spec`` part of the webhook's patches, kept as text and base64 (issue 17).

Injection changes two keys of a pod, ``metadata`` and ``spec``; the patch is their operations
in that order. What ``inject_spec`` does depends on the template (annotations, containers)
and the pod's ``SPEC_FIELDS`` only, so pods of one template agreeing on those fields (a
Deployment's, a StatefulSet's without per-pod volumes) have the same ``/spec`` operations:
``PlanCache`` keeps their JSON text here, keyed by ``spec_key``, and only the ``/metadata``
part (``original-pod`` differs for every pod) is made and encoded per pod. The base64 of the
part's end is kept too: base64 of a multiple of 3 bytes has no padding, so the patch's base64
is that of the head's whole 3-byte groups followed by the kept end for the head's last bytes.
Pure: bytes in, bytes out.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import msgspec

from loom.inject.injection import SPEC_FIELDS

_FAST = msgspec.json.Encoder()



def spec_key(spec: dict[str, Any]) -> bytes | None:
    """The msgspec text of ``spec``'s ``SPEC_FIELDS`` (present or not, and their values),
    equal for equal fields of a plain pod (no float); None when msgspec cannot write them."""
    try:
        return _FAST.encode([(f in spec, spec.get(f)) for f in SPEC_FIELDS])
    except (TypeError, UnicodeEncodeError, OverflowError, msgspec.EncodeError):
        return None  # a lone surrogate or a huge integer: made anew, not kept


@dataclass
class SpecPart:
    """The ``/spec`` operations of a patch as ``compact`` JSON (an array), and the base64 of
    its end after each ``carry`` seen (the bytes of a head past its last whole 3: base64 of
    a multiple of 3 bytes has no padding, so the rest of a patch's base64 is just appended)."""

    text: bytes
    encoded: dict[bytes, bytes] = field(default_factory=dict)
    """``b64encode(carry + the text after the head)`` by carry (at most ``CARRIES``)."""

    def encode_after(self, head: bytes) -> bytes:
        """``b64encode`` of the compact array of ``head``'s items (a compact JSON array) then
        this part's."""
        opening = head[:-1] if head != b"[]" else b"["
        whole = len(opening) - len(opening) % 3
        carry = opening[whole:]
        if head != b"[]" and self.text != b"[]":
            carry += b","
        end = self.encoded.get(carry)
        if end is None:
            end = base64.b64encode(carry + self.text[1:])
            if len(self.encoded) >= CARRIES:
                self.encoded.clear()
            self.encoded[carry] = end
        return base64.b64encode(opening[:whole]) + end


CARRIES = 16
"""Base64 ends kept per spec part (a carry is at most 3 bytes: few occur)."""
