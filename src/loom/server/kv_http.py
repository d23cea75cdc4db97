"""``/v1/kv/{key}`` and ``/v1/txn``: Consul's KV API over ``loom.control.kv``.

Keys are taken from the raw request path and percent-decoded here, byte for byte, so a key
that is not valid UTF-8 is refused (400) rather than silently kept as ``%FF`` text. Single-key
writes are one-op transactions: their failures (a stale ``cas``, a lock already held) answer
``false`` as Consul's do; ``/v1/txn`` answers 409 with Consul's ``Errors`` list instead.

ACLs, as Consul checks them: a single read needs ``key:read`` (in ``guard.NEEDS``); a
``?recurse`` or ``?keys`` list is filtered by ``key:read``; a write needs ``key:write``; a
recursive delete needs write on the whole prefix (``Authorizer.key_write_prefix``, checked
here); each op of a transaction is vetted the same way, a refused one failing it. What the
routes need before their handler runs is in ``loom.server.kv_needs`` (``guard.NEEDS``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from loom.acl.authorizer import Authorizer
from loom.acl.rules import Access
from loom.control.kv import Outcome
from loom.control.state import State
from loom.domain.fields import ValidationError
from loom.domain.kv import (
    MAX_VALUE_BYTES,
    KvEntry,
    KvOp,
    TxnTooLarge,
    encode_value,
    keys_under,
    parse_txn,
    parse_uint,
)
from loom.server import acl_reads, guard
from loom.server.blocking import park, wait_params
from loom.server.kv_needs import request_key
from loom.server.txn_views import catalog_vet, txn_result

HEADERS = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}


def entry_json(e: KvEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "LockIndex": e.lock_index, "Key": e.key, "Flags": e.flags,
        "Value": encode_value(e.value), "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    }  # fmt: skip
    if e.session:
        out["Session"] = e.session
    return out


def _json(data: Any, index: int | None = None, status: int = 200) -> web.Response:
    headers = dict(HEADERS)
    if index is not None:
        headers["X-Consul-Index"] = str(index)
    return web.Response(
        text=json.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _not_found(index: int) -> web.Response:
    """Consul's answer for nothing at a key or prefix: 404, no body, the index to wait on."""
    return web.Response(status=404, headers={**HEADERS, "X-Consul-Index": str(index)})


def _flag(request: web.Request, name: str) -> bool:
    return name in request.query and request.query[name] not in ("false", "0")


async def blocking(request: web.Request, current: Callable[[], int]) -> int:
    """Wait as a blocking query asks (``?index=&wait=``), on ``current`` (a key's or
    prefix's index): other keys' writes do not end the wait. Returns the index to report."""
    state = guard.state_of(request)
    params = wait_params(request)
    if params is None or params[0] <= 0:
        return current()
    after, timeout = params
    await park(request, lambda: state.kv.wait(current, after, timeout))
    return current()


def _readable(request: web.Request) -> Callable[[str], bool] | None:
    authz = guard.authorizer(request)
    if authz is None:
        return None
    reads = acl_reads.reads_of(authz)
    return lambda key: reads.allowed("key", Access.READ, key)


async def kv_get(request: web.Request) -> web.StreamResponse:
    state = guard.state_of(request)
    key = request_key(request)
    if _flag(request, "keys"):
        separator = request.query.get("separator", "")
        index = await blocking(request, lambda: state.kv.prefix_index(key))
        found = keys_under(state.kv.sorted.under(key), key, separator)
        shown = acl_reads.visible(request, found, lambda r, k: r.allowed("key", Access.READ, k))
        return _json(shown, index) if shown else _not_found(index)
    if _flag(request, "recurse"):
        index = await blocking(request, lambda: state.kv.prefix_index(key))
        entries = acl_reads.visible(
            request, state.kv.tree(key), lambda r, e: r.allowed("key", Access.READ, e.key)
        )
        if not entries:
            return _not_found(index)
        return _json([entry_json(e) for e in entries], index)
    index = await blocking(request, lambda: state.kv.key_index(key))
    entry = state.kv.get(key)
    if entry is None:
        return _not_found(index)
    if _flag(request, "raw"):
        return web.Response(
            body=entry.value or b"",
            headers={
                **HEADERS, "X-Consul-Index": str(index),
                "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff",
            },
        )  # fmt: skip
    return _json([entry_json(entry)], index)


async def _value(request: web.Request) -> bytes | None:
    length = request.content_length
    if length is not None and length > MAX_VALUE_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_VALUE_BYTES, actual_size=length,
            text=f"Request body({length} bytes) too large, max size: {MAX_VALUE_BYTES} bytes\n",
        )  # fmt: skip
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_VALUE_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_VALUE_BYTES, actual_size=size,
                text=f"Request body too large, max size: {MAX_VALUE_BYTES} bytes\n",
            )  # fmt: skip
        chunks.append(chunk)
    return b"".join(chunks) or None


def _answer(outcome: Outcome) -> web.Response:
    """A single-key write's answer: ``true``, ``false``, or a 400 for a session that is not."""
    for error in outcome.errors:
        if error.invalid_session:
            raise ValidationError(error.what)
    return _json(outcome.ok, outcome.index)


async def kv_put(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    key = request_key(request)
    if not key:
        raise ValidationError("Missing key name")
    q = request.query
    flags = parse_uint(q.get("flags"), "flags") or 0
    verb, index, session = "set", 0, ""
    if "cas" in q:
        verb, index = "cas", parse_uint(q["cas"], "cas") or 0
    if "acquire" in q:
        verb, session = "lock", q["acquire"]
    if "release" in q:
        verb, session = "unlock", q["release"]
    value = await _value(request)
    op = KvOp(verb, key, value, flags=flags, index=index, session=session)
    return _answer(await state.kv.apply([op]))


async def kv_delete(request: web.Request) -> web.Response:
    state = guard.state_of(request)
    key = request_key(request)
    if _flag(request, "recurse"):
        authz = guard.authorizer(request)
        if authz is not None and not authz.key_write_prefix(key):
            raise authz.denial("key", Access.WRITE, key)
        op = KvOp("delete-tree", key)
    elif not key:
        raise ValidationError("Missing key name")
    elif "cas" in request.query:
        op = KvOp("delete-cas", key, index=parse_uint(request.query["cas"], "cas") or 0)
    else:
        op = KvOp("delete", key)
    return _answer(await state.kv.apply([op]))


def _vet(authz: Authorizer) -> Callable[[KvOp], bool]:
    def allowed(op: KvOp) -> bool:
        if op.verb == "get-tree":
            return True  # filtered by key:read
        if op.verb == "delete-tree":
            return authz.key_write_prefix(op.key)
        access = Access.READ if op.reads_only else Access.WRITE
        return authz.allowed("key", access, op.key)

    return allowed


async def txn(request: web.Request) -> web.Response:
    from loom.server.http import _body

    state: State = guard.state_of(request)
    body = await _body(request)
    try:
        ops = parse_txn(body)
    except TxnTooLarge as exc:
        return web.Response(status=413, text=f"{exc}\n")
    authz = guard.authorizer(request)
    outcome = await state.txn.apply(
        ops,
        _vet(authz) if authz is not None else None,
        catalog_vet(authz) if authz is not None else None,
        _readable(request),
    )
    if not outcome.ok:
        errors = [{"OpIndex": e.op_index, "What": e.what} for e in outcome.errors]
        return _json({"Results": None, "Errors": errors}, outcome.index, 409)
    results = [txn_result(state, r) for r in outcome.results]
    return _json({"Results": results or None, "Errors": None}, outcome.index)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/v1/kv/{key:.*}", kv_get)
    r.add_put("/v1/kv/{key:.*}", kv_put)
    r.add_delete("/v1/kv/{key:.*}", kv_delete)
    r.add_put("/v1/txn", txn)


__all__ = ["add_routes", "entry_json"]
