"""AdmissionReview in, AdmissionReview out: the webhook's decisions, without the server.

``review(body, settings, namespace_labels)`` parses an ``admission.k8s.io/v1`` review, runs the
pod through ``plan_injection`` and builds the response: a JSONPatch (the diff of the original
and injected pod) when injected; ``allowed: true`` without a patch when not to inject;
``allowed: false`` with the refusal (naming the annotation and value) when the planner
refuses. ``Answer.wire()`` is the response as sent, the base64 patch spliced in as bytes (it
needs no JSON escaping, so it never goes through the encoder a second time). Every pod of a
Deployment is the same template: given a ``PlanCache``, the answer of a pod already seen
(same pod JSON, namespace, labels and settings: the planner's whole input) is reused, only
the uid changes. A body that cannot be answered raises ``MalformedReview`` naming the problem (bad
JSON, nesting deeper than ``MAX_JSON_DEPTH``, a lone UTF-16 surrogate, a field of the wrong
type, no ``request.uid``...); ``malformed_answer`` turns it into a denial (``allowed: false``,
code 400) that carries the request's uid when one could be read. This is the one place that
maps planner errors to wire responses. Pure: labels come in as an argument.
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from loom.domain.fields import (
    MAX_JSON_DEPTH,
    ValidationError,
    check_json_body,
    check_json_depth,
    check_json_text,
)
from loom.inject import InjectError, InjectSettings, NamespaceInfo, plan_injection
from loom.inject.injection import (
    METADATA_FIELDS,
    TemplatePlan,
    inject_metadata,
    inject_spec,
    plan_template,
)
from loom.inject.lint import misspelled
from loom.k8s.errors import K8sError
from loom.k8s.jsonpatch import diff
from loom.k8s.patch_parts import MetadataPart, SpecPart, compact, spec_key

API_VERSION = "admission.k8s.io/v1"

_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
"""Compact JSON for patches (the operations hold no cycles: skip the check on the hot path)."""
_FAST = msgspec.json.Encoder()
"""The same compact JSON, 6-8x faster (msgspec, which lightkube already brings), for documents
where it gives the very same bytes: see ``compact``."""

MAX_MESSAGE = 300
"""Characters of a malformed review's message kept (it may quote the review's keys)."""

POD_SECURITY_PATH = "/mutate/pod-security/"
"""Reviews of pods in namespaces enforcing a PodSecurity level: the API server sends no
namespace labels, so ``loom install`` routes those namespaces here by ``namespaceSelector``
(``/mutate/pod-security/baseline`` or ``.../restricted``) and the webhook adds the level as
the ``pod-security.kubernetes.io/enforce`` label."""

NamespaceLabels = Callable[[str], Mapping[str, str]]
"""Labels of a namespace by name (from the webhook's cache)."""


class MalformedReview(K8sError):
    """The request body is not an AdmissionReview the webhook can answer.

    ``uid`` is the request's uid when it could be read (the answer is then a denial the API
    server matches to its request), else empty (the body was not a review at all).
    """

    def __init__(self, message: str, uid: str = "") -> None:
        # A path can name keys of any length: keep the message (and the log line) short.
        super().__init__(message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "...")
        self.uid = uid


_HEAD = b'{"apiVersion":"%s","kind":"AdmissionReview","response":{"uid":' % API_VERSION.encode()
_PATCHED = b',"allowed":true,"patchType":"JSONPatch","patch":"'


@dataclass(frozen=True)
class Answer:
    """The response document and the outcome for metrics and logs."""

    body: dict[str, Any]
    outcome: str
    """``injected``, ``skipped`` or ``refused`` (see ``metrics.OUTCOMES``)."""
    message: str
    patch: bytes | None = None
    """The base64 JSONPatch when injected (the same text as ``body``'s ``patch``)."""

    def wire(self) -> bytes:
        """``body`` as compact JSON, byte for byte; the patch is spliced in, not encoded."""
        if self.patch is None:
            return _ENCODER.encode(self.body).encode()
        uid = compact(self.body["response"]["uid"])
        return b"".join((_HEAD, uid, _PATCHED, self.patch, b'"}}'))


@dataclass(frozen=True)
class _Planned:
    """A review's answer without its uid: what a pod template always gets."""

    outcome: str
    message: str
    patch: bytes | None = None
    status: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    """Annotations the injector will not act on (kubectl shows them as "Warning: ...")."""

    def answer(self, uid: str) -> Answer:
        warned: dict[str, Any] = {"warnings": list(self.warnings)} if self.warnings else {}
        if self.patch is not None:
            body = _response(
                uid, allowed=True, patchType="JSONPatch", patch=self.patch.decode(), **warned
            )
        elif self.status is not None:
            body = _response(uid, allowed=False, status=dict(self.status))
        else:
            body = _response(uid, allowed=True, **warned)
        return Answer(body, self.outcome, self.message, self.patch)


_TemplateKey = tuple[bytes, str, tuple[tuple[str, str], ...]]


class PlanCache:
    """The last ``entries`` pod templates' answers, least recently used dropped first.

    Keyed by the planner's whole input (the pod's JSON, namespace, namespace labels) for one
    ``InjectSettings`` object: other settings empty it. Pods whose JSON is longer than
    ``max_pod_bytes`` are not kept (a cap on the memory the keys can take).

    Beside them, as many ``plan_template`` results, keyed by the part of the input those read
    (the pod's annotations and containers, namespace, labels): pods that differ elsewhere
    (a label, a name: every pod of a StatefulSet, or a Deployment's after a relabelling)
    reuse the decision, the plan and the sidecar and init containers, and are only patched
    anew. Only plain pods (no float: msgspec writes NaN as null) get a template key.

    Each template also keeps the JSON text of its patch's ``/spec`` operations for up to
    ``SPEC_PARTS`` spec inputs (the pod's ``SPEC_FIELDS``: pods of one template mostly agree
    on them), so such a pod only has its metadata injected, diffed and encoded.
    """

    def __init__(self, entries: int = 256, max_pod_bytes: int = 64 * 1024) -> None:
        self.entries = entries
        self.max_pod_bytes = max_pod_bytes
        self.hits = 0
        self.misses = 0
        self._settings: InjectSettings | None = None
        self.template_hits = 0
        self.template_misses = 0
        self._kept: OrderedDict[tuple[bytes, str, tuple[tuple[str, str], ...]], _Planned] = (
            OrderedDict()
        )
        self._templates: OrderedDict[_TemplateKey, _Template] = OrderedDict()
        self.spec_hits = 0
        self.spec_misses = 0

    def __len__(self) -> int:
        return len(self._kept)

    def key(
        self,
        settings: InjectSettings,
        pod: Any,
        namespace: str,
        labels: Mapping[str, str],
        plain: bool = False,
    ) -> tuple[bytes, str, tuple[tuple[str, str], ...]] | None:
        """The cache key of a pod (``plain``: as for ``compact``)."""
        self._use(settings)
        text = _key_text(pod, plain)
        if len(text) > self.max_pod_bytes:
            return None
        return (text, namespace, tuple(sorted(labels.items())))

    def lookup(self, key: tuple[bytes, str, tuple[tuple[str, str], ...]]) -> _Planned | None:
        found = self._kept.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._kept.move_to_end(key)
        return found

    def keep(self, key: tuple[bytes, str, tuple[tuple[str, str], ...]], planned: _Planned) -> None:
        self._kept[key] = planned
        while len(self._kept) > self.entries:
            self._kept.popitem(last=False)

    def template(
        self, pod: dict[str, Any], namespace: NamespaceInfo, settings: InjectSettings, plain: bool
    ) -> _Template | None:
        """``plan_template`` of ``pod`` and the warnings on its annotations, kept or made (and
        kept); None when the pod has no template key (not plain, not a readable pod, or larger
        than ``max_pod_bytes``). Raises as ``plan_template`` does (a refusal is not kept)."""
        self._use(settings)
        key = self._template_key(pod, namespace, plain)
        if key is None:
            return None
        found = self._templates.get(key)
        if found is not None:
            self.template_hits += 1
            self._templates.move_to_end(key)
            return found
        self.template_misses += 1
        planned = plan_template(pod, namespace, settings)
        marks = None
        if planned.plan is not None:
            marks = MetadataPart.of(pod["metadata"].get("annotations"), planned.plan)
        found = _Template(planned, tuple(_warnings(pod)), marks=marks)
        self._templates[key] = found
        while len(self._templates) > self.entries:
            self._templates.popitem(last=False)
        return found

    def _template_key(
        self, pod: dict[str, Any], namespace: NamespaceInfo, plain: bool
    ) -> _TemplateKey | None:
        metadata, spec = pod.get("metadata"), pod.get("spec")
        if not plain or not isinstance(metadata, dict) or not isinstance(spec, dict):
            return None
        try:  # equal texts are equal JSON documents: msgspec is exact but for floats and keys
            text = _FAST.encode((metadata.get("annotations"), spec.get("containers")))
        except (TypeError, UnicodeEncodeError, OverflowError, msgspec.EncodeError):
            return None  # a lone surrogate or a huge integer: planned anew
        if len(text) > self.max_pod_bytes:
            return None
        return (text, namespace.name, tuple(sorted(namespace.labels.items())))

    def patch(self, pod: dict[str, Any], kept: _Template, settings: InjectSettings) -> bytes:
        """The base64 JSONPatch of plain ``pod`` (a dict ``metadata`` and ``spec``, as its
        template key vouches) injected with ``kept``'s plan: of ``compact(diff(pod, injected))``
        byte for byte, built as the ``/metadata`` part then the ``/spec`` part (the only keys
        injection changes, in diff's sorted order), the latter kept (as text, and as base64
        after the head's last bytes). Raises as ``inject_spec``."""
        plan = kept.plan.plan
        assert plan is not None
        before = pod["metadata"]
        head = None if kept.marks is None else kept.marks.head(pod)
        if head is None:
            metadata = inject_metadata(pod, plan, True)
            if _FIRST in before and _SECOND in before:  # then diff's operations are theirs
                ops = diff(before[_FIRST], metadata[_FIRST], f"/metadata/{_FIRST}")
                ops += diff(before[_SECOND], metadata[_SECOND], f"/metadata/{_SECOND}")
            else:
                ops = diff(before, metadata, "/metadata")
            head = compact(ops)
        spec = pod["spec"]
        key = spec_key(spec)
        part = None if key is None else kept.specs.get(key)
        if part is None:
            self.spec_misses += 1
            ops = diff(spec, inject_spec(pod, plan, settings, kept.plan.added), "/spec")
            part = SpecPart(compact(ops))
            if key is not None and len(key) <= self.max_pod_bytes:
                if len(kept.specs) >= SPEC_PARTS:
                    kept.specs.clear()
                kept.specs[key] = part
        else:
            self.spec_hits += 1
        return part.encode_after(head)

    def _use(self, settings: InjectSettings) -> None:
        if settings is not self._settings:
            self._kept.clear()
            self._templates.clear()
            self._settings = settings


_FIRST, _SECOND = METADATA_FIELDS
"""The metadata keys injection changes, in diff's order (no escaping needed)."""

SPEC_PARTS = 8
"""Spec parts of patches kept per template (see ``PlanCache``)."""


@dataclass
class _Template:
    """A kept template: its plan, its annotations' warnings, and its patches' spec parts."""

    plan: TemplatePlan
    warnings: tuple[str, ...]
    specs: dict[bytes, SpecPart] = field(default_factory=dict)
    """The ``/spec`` parts of patches, keyed by ``spec_key`` (the pod's ``SPEC_FIELDS``,
    present or not, and their values); never more than ``SPEC_PARTS``."""
    marks: MetadataPart | None = None
    """The ``/metadata`` part of its patches; None when not injected or not kept (see
    ``MetadataPart.of``)."""


def _key_text(doc: Any, plain: bool) -> bytes:
    """A text equal for equal documents only: msgspec's (tagged ``m``) for a plain one, where
    it is exact whatever the characters (it cannot tell NaN from null), else ``compact``'s."""
    if plain:
        try:
            return b"m" + _FAST.encode(doc)
        except (TypeError, UnicodeEncodeError, OverflowError, msgspec.EncodeError):
            pass
    return b"j" + compact(doc, plain)


class _Float(Exception):
    """A float in the body: it is read the standard way (``_load``)."""


def _no_float(text: str) -> float:
    raise _Float


_DECODER = msgspec.json.Decoder(float_hook=_no_float)
"""Reads a plain body 2-3x faster than ``json.loads``, into the very same objects: it refuses
what ``json.loads`` also refuses or reads differently (a float, NaN, a BOM, a lone surrogate,
invalid UTF-8 or nesting beyond the interpreter's limit), and such bodies take ``json.loads``."""


def _load(body: bytes) -> tuple[Any, bool]:
    """``json.loads(body)``, and whether the document is plain: no float, NaN or infinity."""
    return _read(body)[:2]


def _read(body: bytes) -> tuple[Any, bool, bool]:
    """``_load``, and whether msgspec read it (then it is UTF-8 without a lone surrogate)."""
    try:
        return _DECODER.decode(body), True, True
    except (_Float, msgspec.DecodeError, RecursionError, TypeError):
        pass  # the standard way below, which also gives the standard error message
    floats: list[str] = []

    def number(text: str) -> float:
        floats.append(text)
        return float(text)

    doc = json.loads(body, parse_float=number, parse_constant=number)
    return doc, not floats, False


def parse_review(body: bytes) -> dict[str, Any]:
    """The review's ``request``; raises ``MalformedReview`` naming what is wrong."""
    return _parse_review(body)[0]


def _parse_review(body: bytes) -> tuple[dict[str, Any], bool]:
    """``parse_review``, and whether the review is plain (see ``_load``)."""
    try:
        doc, plain, strict = _read(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedReview(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise MalformedReview(f"body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(doc, dict):
        raise MalformedReview("body is not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview":
        raise MalformedReview(f"expected kind AdmissionReview, apiVersion {API_VERSION}")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("request: missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid: missing or not a string")
    try:
        check_json_text(uid, "request.uid")
    except ValidationError as exc:
        raise MalformedReview(str(exc)) from None
    try:
        (check_json_depth if strict else check_json_body)(body, request, "request")
    except ValidationError as exc:
        raise MalformedReview(str(exc), uid) from None
    return request, plain


def review(
    body: bytes,
    settings: InjectSettings,
    namespace_labels: NamespaceLabels,
    cache: PlanCache | None = None,
) -> Answer:
    """Answer one review (see the module docstring)."""
    request, plain = _parse_review(body)
    uid = request["uid"]
    kind = request.get("kind")
    pod = request.get("object")
    if not isinstance(kind, dict) or kind.get("kind") != "Pod" or kind.get("group", "") != "":
        return _allow(uid, "skipped", f"not a Pod ({kind!r})")
    if request.get("operation", "CREATE") != "CREATE":
        return _allow(uid, "skipped", f"operation {request.get('operation')} is not CREATE")
    if not isinstance(pod, dict):
        raise MalformedReview("request.object: missing or not an object", uid)
    namespace = _namespace(request, pod)
    labels = _labels(request) or namespace_labels(namespace)
    info = NamespaceInfo(namespace, labels)
    if cache is None:
        return _plan(pod, info, settings, plain).answer(uid)
    key = cache.key(settings, pod, namespace, labels, plain)
    planned = None if key is None else cache.lookup(key)
    if planned is None:
        planned = _plan(pod, info, settings, plain, cache)
        if key is not None:
            cache.keep(key, planned)
    return planned.answer(uid)


def _plan(
    pod: dict[str, Any],
    namespace: NamespaceInfo,
    settings: InjectSettings,
    plain: bool,
    cache: PlanCache | None = None,
) -> _Planned:
    try:
        kept = None if cache is None else cache.template(pod, namespace, settings, plain)
        if cache is not None and kept is not None:  # as plan_injection does, from the parts
            decision, plan = kept.plan.decision, kept.plan.plan
            if plan is None:
                return _Planned("skipped", "; ".join(decision.reasons), warnings=kept.warnings)
            patch = cache.patch(pod, kept, settings)
            reasons = "; ".join(decision.reasons + plan.reasons)
            return _Planned("injected", reasons, patch, warnings=kept.warnings)
        result = plan_injection(pod, namespace, settings, share_unchanged=True, plain=plain)
    except InjectError as exc:
        return _Planned("refused", str(exc), status={"code": 400, "message": str(exc)})
    # Shown by kubectl as "Warning: ...": annotations the injector will not act on.
    warned = tuple(_warnings(pod))
    if not result.inject or result.pod is None:
        return _Planned("skipped", "; ".join(result.reasons), warnings=warned)
    patch = base64.b64encode(compact(diff(pod, result.pod), plain))
    return _Planned("injected", "; ".join(result.reasons), patch, warnings=warned)


def _warnings(pod: dict[str, Any]) -> list[str]:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return misspelled(annotations) if isinstance(annotations, dict) else []


def malformed_answer(exc: MalformedReview) -> dict[str, Any]:
    """The denial for a review that cannot be answered: code 400 and what is wrong."""
    return _response(exc.uid, allowed=False, status={"code": 400, "message": str(exc)})


def error_answer(body: bytes, message: str) -> dict[str, Any]:
    """A denial for an unexpected internal error (the uid echoed when it can be read)."""
    try:
        uid = json.loads(body)["request"]["uid"]
    except Exception:
        uid = ""
    return _response(uid, allowed=False, status={"code": 500, "message": message})


def _namespace(request: Mapping[str, Any], pod: Mapping[str, Any]) -> str:
    ns = request.get("namespace")
    if not ns:
        metadata = pod.get("metadata")
        ns = metadata.get("namespace") if isinstance(metadata, dict) else None
    return str(ns or "default")


def _labels(request: Mapping[str, Any]) -> dict[str, str] | None:
    # Not sent by kube-apiserver to webhooks today; honoured when a caller includes it.
    ns_object = request.get("namespaceObject")
    if isinstance(ns_object, dict):
        labels = (ns_object.get("metadata") or {}).get("labels")
        if isinstance(labels, dict):
            return {str(k): str(v) for k, v in labels.items()}
    return None


def _allow(uid: str, outcome: str, message: str) -> Answer:
    return Answer(_response(uid, allowed=True), outcome, message)


def _response(uid: str, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": {"uid": uid, **fields},
    }
