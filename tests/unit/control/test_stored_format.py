"""A SQLite data dir written before typed records loads, reads the same, and re-encodes to
the very bytes it holds (``state_before_typed_records.json``: the rows the old code wrote for
a service with a sidecar and a TTL check, a catalog node with a check in another namespace,
an intention, an external service and a service-defaults entry). The same holds for config
entries of every kind (``config_entries_before_typed_records.json``, below), whose HTTP answers
are also kept byte for byte."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from loom.control.state import ServerSettings, State
from loom.domain.entries import KINDS
from loom.domain.records import CaRoot, Check, Cluster, ExternalVips, Instance, Node, VirtualIp
from loom.server import views
from loom.store.sqlite import SqliteStore
from loom.store.tables import (
    ACL_TABLES,
    CA_CONFIG,
    FEDERATION_STATES,
    KV_TABLES,
    QUERIES,
    TABLES,
    encode,
)

ROWS = json.loads((Path(__file__).parent / "state_before_typed_records.json").read_text())
SCHEMA = """
CREATE TABLE docs (tbl TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                   idx INTEGER NOT NULL, PRIMARY KEY (tbl, key));
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE table_index (tbl TEXT PRIMARY KEY, idx INTEGER NOT NULL);
"""


def old_data_dir(path: Path) -> Path:
    db = sqlite3.connect(str(path / "state.db"))
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", ROWS["docs"])
    db.executemany("INSERT INTO table_index VALUES (?, ?)", ROWS["table_index"])
    db.executemany("INSERT INTO meta VALUES (?, ?)", ROWS["meta"])
    db.commit()
    db.close()
    return path


async def test_an_old_data_dir_loads_into_typed_records(tmp_path: Path) -> None:
    state = State(ServerSettings(), store=SqliteStore(old_data_dir(tmp_path)))
    await state.start()
    try:
        store = state.store
        assert store.index == 7
        assert store.record(TABLES["nodes"], "n2") == Node(
            "n2", "10.1.0.2", "dc1", "", {"lan": "10.1.0.2"}, {"rack": "r1"}
        )
        check = store.record(TABLES["checks"], "loom-server/default/service:web")
        assert isinstance(check, Check)
        assert (check.status, check.output, check.ttl, check.type) == ("passing", "ok", "30s", "ttl")
        assert store.record(TABLES["vips"], "ns1/db") == VirtualIp("240.0.0.2")
        assert store.record(TABLES["external_vips"], "x.example.com") == ExternalVips(
            "240.240.0.1", "fd00:f0f0::1"
        )
        side = store.record(TABLES["services"], "loom-server/default/web-sidecar-proxy")
        assert isinstance(side, Instance) and side.proxy is not None
        assert side.proxy.upstreams[0].local_bind_port == 9191
        assert isinstance(store.record(TABLES["ca"], "root"), CaRoot)
        cluster = store.record(TABLES["meta"], "cluster")
        assert isinstance(cluster, Cluster)
        assert state.certs.trust_domain == f"{cluster.id}.consul"  # the old root, not a new one
        [(db, checks)] = state.catalog.health("ns1", "db")
        assert views.health_check(checks[0], 1)["Status"] == "warning"
        assert views.catalog_service(state.catalog, db, 1)["NodeMeta"] == {"rack": "r1"}
        assert state.configs.check("default/web", "ns1/db").allowed
    finally:
        await state.close()


async def test_every_old_document_re_encodes_to_the_bytes_on_disk(tmp_path: Path) -> None:
    store = SqliteStore(old_data_dir(tmp_path))
    try:
        seen: set[str] = set()
        for table, key, raw, _ in ROWS["docs"]:
            value: Any = store.peek(table, key)
            assert json.dumps(encode(table, value), sort_keys=True) == raw, (table, key)
            seen.add(table)
        # every table has a document in the old state, but those that came later: the ACL
        # tables, the CA configuration (written only by PUT /v1/connect/ca/configuration) and
        # the KV store's and sessions' tables
        # tables made after the fixture was written
        newer = {CA_CONFIG.name, QUERIES.name, FEDERATION_STATES.name}
        assert seen == set(TABLES) - set(ACL_TABLES) - newer - set(KV_TABLES)
    finally:
        await store.close()


def test_a_sidecar_stored_before_expose_was_kept_round_trips_without_it() -> None:
    raw = next(r[2] for r in ROWS["docs"] if r[1] == "loom-server/default/web-sidecar-proxy")
    doc = json.loads(raw)
    del doc["Proxy"]["Expose"]
    side = TABLES["services"].decode(doc)
    assert side.proxy.expose is None
    assert encode("services", side) == doc


# -- config entries: rows and answers of the code before typed entries ---------------------------
#
# ``config_entries_before_typed_records.json`` was written by main at 0dcdda7 (config entries
# as validated dicts): it replayed ``ops`` (every kind, L7 permissions with each header match,
# legacy intention upserts and a delete, a failed check-and-set, an unchanged rewrite) against
# a SQLite data dir and kept the rows of ``config`` and ``external_vips`` and the JSON text
# its HTTP handlers would have answered (``json.dumps`` of each entry, each list, the legacy
# intentions and a match).

ENTRIES = json.loads(
    (Path(__file__).parent / "config_entries_before_typed_records.json").read_text()
)


async def _replay(configs: Any, op: list[Any]) -> None:
    what, a, b, c = op
    if what == "write":
        assert await configs.write(a, b) is c
    elif what == "upsert":
        await configs.upsert_exact(a, b, c)
    else:
        await configs.delete_exact(a, b)


def _rows(data_dir: Path) -> list[list[Any]]:
    db = sqlite3.connect(str(data_dir / "state.db"))
    try:
        query = (
            "SELECT tbl, key, value, idx FROM docs WHERE tbl IN ('config', 'external_vips') "
            "ORDER BY tbl, key"
        )
        return [list(r) for r in db.execute(query)]
    finally:
        db.close()


def test_every_old_config_entry_re_encodes_to_the_bytes_on_disk() -> None:
    kinds = set()
    for table, _, raw, _ in ENTRIES["docs"]:
        record = TABLES[table].decode(json.loads(raw))
        assert json.dumps(encode(table, record), sort_keys=True) == raw
        kinds.add(getattr(record, "kind", table))
    # service-resolver came after those rows (its documents: test_service_resolver.py).
    assert kinds == {*KINDS, "external_vips"} - {"service-resolver"}


def _answers(configs: Any) -> dict[str, str]:
    """The JSON text the HTTP handlers answer for every entry, list and intention query."""
    out = {
        f"list {k}": json.dumps([views.config_entry(e) for e in configs.entries(k)])
        for k in KINDS
        if k != "service-resolver"  # a kind those rows predate
    }
    for e in configs.entries():
        out[f"get {e.key}"] = json.dumps(
            views.config_entry(configs.get(e.kind, e.name, e.namespace))
        )
    out["intentions"] = json.dumps([views.intention(i, 42) for i in configs.intentions()])
    found = configs.match("destination", ["team/api", "db"])
    out["match"] = json.dumps({r: [views.intention(i, 42) for i in h] for r, h in found.items()})
    return out


async def test_the_same_writes_store_and_answer_the_same_bytes_as_before(tmp_path: Path) -> None:
    state = State(ServerSettings(), store=SqliteStore(tmp_path))
    await state.start()
    try:
        for op in ENTRIES["ops"]:
            await _replay(state.configs, op)
        assert state.store.index == ENTRIES["index"]
        assert _answers(state.configs) == ENTRIES["responses"]
    finally:
        await state.close()
    assert _rows(tmp_path) == ENTRIES["docs"]


async def test_entries_loaded_from_old_rows_answer_as_before(tmp_path: Path) -> None:
    """Loaded from disk, opaque maps (proxy-defaults' Config) come back in key order, as they
    did before; every answer is the same JSON value."""
    db = sqlite3.connect(str(tmp_path / "state.db"))
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", ENTRIES["docs"])
    db.execute("INSERT INTO meta VALUES ('index', ?)", (ENTRIES["index"],))
    db.commit()
    db.close()
    state = State(ServerSettings(), store=SqliteStore(tmp_path))
    await state.start()
    try:
        answers = _answers(state.configs)
        assert answers.keys() == ENTRIES["responses"].keys()
        for what, text in ENTRIES["responses"].items():
            assert json.loads(answers[what]) == json.loads(text), what
        assert state.configs.check("jobs/batch", "team/api").allowed
        assert not state.configs.check("other/x", "team/api").allowed
    finally:
        await state.close()
