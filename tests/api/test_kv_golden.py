"""Golden request/response pairs of the KV, session and txn endpoints on a fresh real server
(``tests/golden/api/kv.txt``, refreshed with ``--update-golden``).

Volatile parts are rewritten so the pairs stay stable: session IDs become ``<session-N>``,
and indexes are counted from the first write of the sequence (``+1``, ``+2``...), so writes
the server makes at start (the CA, the ACL records) do not shift them."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from tests.support.server import ServerProcess

INDEX_FIELDS = ("CreateIndex", "ModifyIndex")


class Recorder:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.base = 0
        self.sessions: dict[str, str] = {}
        self.lines: list[str] = []

    def _session(self, sid: str) -> str:
        return self.sessions.setdefault(sid, f"<session-{len(self.sessions) + 1}>")

    def _index(self, index: int) -> str:
        """``+N`` counted from the sequence's start; an index from before it (1: a key never
        written) as it is."""
        return f"+{index - self.base}" if index >= self.base else str(index)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k in INDEX_FIELDS and isinstance(v, int):
                    out[k] = self._index(v)
                elif k in ("ID", "Session") and isinstance(v, str) and v in self.sessions:
                    out[k] = self.sessions[v]
                else:
                    out[k] = self._scrub(v)
            return out
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        if isinstance(value, str):  # an error text naming a session
            for sid, name in self.sessions.items():
                value = value.replace(sid, name)
        return value

    def call(self, method: str, path: str, body: Any = None) -> Any:
        shown_path = path
        for sid, name in self.sessions.items():
            shown_path = shown_path.replace(sid, name)
        status, out, headers = self.server.request(method, path, body)
        if isinstance(out, dict) and isinstance(out.get("ID"), str):
            self._session(out["ID"])
        index = headers.get("X-Consul-Index")
        shown_index = self._index(int(index)) if index else "-"
        sent = (
            ""
            if body is None
            else " "
            + (body.decode() if isinstance(body, bytes) else json.dumps(body, sort_keys=True))
        )
        for sid, name in self.sessions.items():
            sent = sent.replace(sid, name)
        answer = json.dumps(self._scrub(out), sort_keys=True) if out is not None else ""
        self.lines.append(
            f"{method} {shown_path}{sent}\n  -> {status} index {shown_index} {answer}"
        )
        return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_kv_session_and_txn_answers_match_the_golden_pairs(
    loom_server: ServerProcess, golden: Any
) -> None:
    r = Recorder(loom_server)
    _, _, headers = loom_server.request("PUT", "/v1/kv/golden/start", b"")
    r.base = int(headers["X-Consul-Index"])
    r.call("PUT", "/v1/kv/golden/a?flags=7", b"alpha")
    r.call("GET", "/v1/kv/golden/a")
    r.call("GET", "/v1/kv/golden/a?raw")
    r.call("GET", "/v1/kv/golden/missing")
    r.call("PUT", "/v1/kv/golden/a?cas=0", b"no")
    r.call("PUT", "/v1/kv/golden/b/c", b"")
    r.call("GET", "/v1/kv/golden/?recurse")
    r.call("GET", "/v1/kv/golden/?keys&separator=/")
    sid = r.call("PUT", "/v1/session/create", {"Name": "golden", "TTL": "30s", "LockDelay": "1s"})
    session = sid["ID"]
    r.call("GET", f"/v1/session/info/{session}")
    r.call("PUT", f"/v1/kv/golden/lock?acquire={session}", b"held")
    r.call("GET", "/v1/kv/golden/lock")
    r.call("PUT", f"/v1/kv/golden/lock?release={session}", b"free")
    r.call("PUT", "/v1/txn", [
        {"KV": {"Verb": "set", "Key": "golden/t", "Value": b64("t"), "Flags": 1}},
        {"KV": {"Verb": "get", "Key": "golden/a"}},
        {"KV": {"Verb": "check-not-exists", "Key": "golden/none"}},
    ])  # fmt: skip
    r.call("PUT", "/v1/txn", [
        {"KV": {"Verb": "delete", "Key": "golden/a"}},
        {"KV": {"Verb": "get", "Key": "golden/none"}},
        {"KV": {"Verb": "check-session", "Key": "golden/t", "Session": session}},
    ])  # fmt: skip
    r.call("PUT", f"/v1/session/destroy/{session}")
    r.call("GET", f"/v1/session/info/{session}")
    r.call("DELETE", "/v1/kv/golden/a?cas=1")
    r.call("DELETE", "/v1/kv/golden?recurse")
    r.call("GET", "/v1/kv/golden?recurse")
    text = "\n".join(r.lines) + "\n"
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", text)  # no raw session ID left
    golden.check("api/kv.txt", text)
