"""The parts of the webhook's patches kept per pod template, as text and base64 (issue 17).

Injection changes two keys of a pod, ``metadata`` and ``spec``; the patch is their operations
in that order. What ``inject_spec`` does depends on the template (annotations, containers)
and the pod's ``SPEC_FIELDS`` only, so pods of one template agreeing on those fields (a
Deployment's, a StatefulSet's without per-pod volumes) have the same ``/spec`` operations:
``PlanCache`` keeps their JSON text here, keyed by ``spec_key``, and only the ``/metadata``
part (``original-pod`` differs for every pod) is made and encoded per pod. The base64 of the
part's end is kept too: base64 of a multiple of 3 bytes has no padding, so the patch's base64
is that of the head's whole 3-byte groups followed by the kept end for the head's last bytes.
The ``/metadata`` part is kept too, as the text of the annotations' operations on either
side of the ``original-pod`` value (``MetadataPart``): the template fixes the annotations, so
only that value (the pod's canonical text) and the labels' operations are made per pod.
``compact`` is the webhook's one JSON writer for patches. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from loom.inject.annotations import ORIGINAL_POD
from loom.inject.injection import SPEC_FIELDS
from loom.inject.metadata import injected_marks, original_pod_json
from loom.inject.plan import WorkloadPlan
from loom.k8s.jsonpatch import diff

_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
"""Compact JSON for patches (the operations hold no cycles: skip the check on the hot path)."""
_FAST = msgspec.json.Encoder()
"""The same compact JSON, 6-8x faster, for documents where it gives the very same bytes: see
``compact``."""


def compact(doc: Any, plain: bool = True) -> bytes:
    """``_ENCODER.encode(doc)`` as UTF-8, byte for byte, fast when msgspec agrees.

    ``plain``: the document holds no float (msgspec writes ``1e16`` for ``1e+16`` and ``null``
    for NaN, which cannot be told from the output); the caller knows, from how the review was
    read. msgspec writes non-ASCII characters and DEL as they are where ``json`` escapes them:
    such output is made again the standard way.
    """
    if plain:
        try:
            out = _FAST.encode(doc)
        except (TypeError, UnicodeEncodeError, OverflowError, msgspec.EncodeError):
            pass  # non-string keys, lone surrogates, huge integers: the standard encoder's job
        else:
            if out.isascii() and b"\x7f" not in out:
                return out
    return _ENCODER.encode(doc).encode()


def spec_key(spec: dict[str, Any]) -> bytes | None:
    """The msgspec text of ``spec``'s ``SPEC_FIELDS`` (present or not, and their values) but
    the ``containers``' value, which a pod's template key holds already (the parts are kept
    per template); equal for equal fields of a plain pod (no float); None when msgspec
    cannot write them."""
    try:
        return _FAST.encode(
            (
                _CONTAINERS in spec,
                _INITS in spec,
                spec.get(_INITS),
                _VOLUMES in spec,
                spec.get(_VOLUMES),
            )
        )
    except (TypeError, UnicodeEncodeError, OverflowError, msgspec.EncodeError):
        return None  # a lone surrogate or a huge integer: made anew, not kept


_CONTAINERS, _INITS, _VOLUMES = SPEC_FIELDS
"""Unpacked: a field added to ``SPEC_FIELDS`` must be added to ``spec_key`` too."""


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


PLACEHOLDER = "\x00loom: original-pod\x00"
"""Where ``original-pod``'s value goes in a ``MetadataPart`` (a template whose annotations
already hold it as ``original-pod`` keeps no part)."""


@dataclass(frozen=True)
class MetadataPart:
    """The ``/metadata`` operations of a template's patches: those on its annotations as
    ``compact`` text before and after the ``original-pod`` value, and the labels injection
    writes (``injected_marks``), whose operations depend on each pod's labels."""

    opening: bytes
    closing: bytes
    labels: dict[str, str]

    @classmethod
    def of(cls, annotations: Any, plan: WorkloadPlan) -> MetadataPart | None:
        """The part for pods whose annotations are ``annotations`` (a dict, else None)."""
        if type(annotations) is not dict:
            return None
        marks, labels = injected_marks(plan)
        marks[ORIGINAL_POD] = PLACEHOLDER
        text = compact(diff(annotations, {**annotations, **marks}, "/metadata/annotations"))
        value = compact(PLACEHOLDER)
        if text.count(value) != 1:
            return None
        opening, closing = text.split(value)
        return cls(opening, closing, labels)

    def head(self, pod: dict[str, Any]) -> bytes | None:
        """``compact`` of the operations ``diff`` gives for plain ``pod``'s ``metadata`` (its
        annotations those of the part) and the injected one; None when the pod has no
        ``annotations`` or no dict ``labels`` (then ``diff`` adds or replaces whole keys)."""
        metadata = pod["metadata"]
        labels = metadata.get("labels")
        if type(labels) is not dict or "annotations" not in metadata:
            return None
        # The value differs from any the pod holds: it is the pod's text, which contains it.
        value = compact(original_pod_json(pod, True))
        ops = compact(diff(labels, {**labels, **self.labels}, "/metadata/labels"))
        tail = b"]" if ops == b"[]" else b"," + ops[1:]
        return b"".join((self.opening, value, self.closing[:-1], tail))
