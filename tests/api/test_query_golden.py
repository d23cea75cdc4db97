"""Golden request/response pairs of the prepared query endpoints on a fresh real server
(``tests/golden/api/query.txt``, refreshed with ``--update-golden``).

Query IDs become ``<query-N>`` and indexes are counted from the sequence's first write, as in
``test_kv_golden``, so the pairs stay stable from run to run."""

from __future__ import annotations

import re
from typing import Any

from tests.api.test_kv_golden import Recorder
from tests.support.server import ServerProcess


class QueryRecorder(Recorder):
    def _session(self, sid: str) -> str:
        return self.sessions.setdefault(sid, f"<query-{len(self.sessions) + 1}>")


def test_prepared_query_answers_match_the_golden_pairs(
    loom_server: ServerProcess, golden: Any
) -> None:
    r = QueryRecorder(loom_server)
    loom_server.put("/v1/catalog/register", {
        "Node": "g1", "Address": "10.9.0.1",
        "Service": {"Service": "gq", "ID": "gq-1", "Port": 7000, "Tags": ["primary"]},
        "Checks": [{"CheckID": "gq-1-ok", "Name": "ok", "Status": "passing", "ServiceID": "gq-1"}],
    })  # fmt: skip
    _, _, headers = loom_server.request("GET", "/v1/catalog/nodes")  # that write's index
    r.base = int(headers["X-Consul-Index"])
    r.call("PUT", "/v1/catalog/register", {
        "Node": "g2", "Address": "10.9.0.2",
        "Service": {"Service": "gq", "ID": "gq-2", "Port": 7000, "Tags": ["replica"]},
        "Checks": [{"CheckID": "gq-2-ok", "Name": "ok", "Status": "warning", "ServiceID": "gq-2"}],
    })  # fmt: skip
    q = r.call("POST", "/v1/query", {"Name": "gq-primary", "Service": {"Service": "gq",
               "Tags": ["primary"]}, "DNS": {"TTL": "10s"}})["ID"]  # fmt: skip
    r.call("GET", f"/v1/query/{q}")
    r.call("GET", "/v1/query/gq-primary/execute")
    r.call("GET", f"/v1/query/{q}/explain")
    t = r.call("POST", "/v1/query", {"Name": "gq-", "Template": {"Type": "name_prefix_match"},
               "Service": {"Service": "gq", "Tags": ["${name.suffix}"],
                           "OnlyPassing": True}})["ID"]  # fmt: skip
    r.call("GET", "/v1/query/gq-replica/explain")
    r.call("GET", "/v1/query/gq-replica/execute")
    r.call("PUT", f"/v1/query/{t}", {"Name": "gq-", "Template": {"Type": "name_prefix_match"},
           "Service": {"Service": "gq", "Tags": ["${name.suffix}"]}})  # fmt: skip
    r.call("GET", "/v1/query/gq-replica/execute?limit=1")
    r.call("GET", f"/v1/query/{t}")  # (the list is in ID order: random, not golden)
    r.call("POST", "/v1/query", {"Name": "gq-primary", "Service": {"Service": "x"}})
    r.call("POST", "/v1/query", {"Service": {"Service": ""}})
    r.call("DELETE", f"/v1/query/{q}")
    r.call("GET", f"/v1/query/{q}")
    r.call("GET", "/v1/query/nothing/execute")
    text = "\n".join(r.lines) + "\n"
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", text)  # no raw query ID left
    golden.check("api/query.txt", text)
