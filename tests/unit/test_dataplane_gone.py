"""When a dataplane-run check is declared orphaned (``checkstate.dataplane_gone``) and how the
xDS stream board counts a proxy's absence (``ProxyStreams.gone_for``), with a clock the test
moves."""

from __future__ import annotations

from loom.control.proxies import ProxyStreams
from loom.domain.checks import CheckDefinition
from loom.domain.checkstate import DATAPLANE_GONE, dataplane_gone
from loom.domain.records import Check

TCP = CheckDefinition(kind="tcp", tcp="127.0.0.1:1", interval_s=10.0, timeout_s=1.0)


def _check(status: str = "passing", output: str = "", d: CheckDefinition | None = TCP) -> Check:
    return Check("n", "c", "c", status, output=output, service_id="web", definition=d, managed=True)


def test_a_check_is_orphaned_after_its_intervals_and_said_so_once() -> None:
    assert dataplane_gone(_check(), "web-sidecar-proxy", 29.9, 3) is None
    said = dataplane_gone(_check(), "web-sidecar-proxy", 30.0, 3)
    assert said is not None and said.startswith(DATAPLANE_GONE)
    assert "web-sidecar-proxy" in said and "3 intervals of 10s" in said
    assert dataplane_gone(_check("critical", said), "web-sidecar-proxy", 90.0, 3) is None
    # critical for another reason: the output is replaced by the dataplane's absence
    assert dataplane_gone(_check("critical", "refused"), "web-sidecar-proxy", 30.0, 3)


def test_an_alias_check_counts_ten_seconds_and_zero_intervals_turns_it_off() -> None:
    alias = CheckDefinition(kind="alias", alias_service="web")
    assert dataplane_gone(_check(d=alias), "p", 29.0, 3) is None
    assert dataplane_gone(_check(d=alias), "p", 30.0, 3) is not None
    assert dataplane_gone(_check(), "p", 1e9, 0) is None
    assert dataplane_gone(_check(d=None), "p", 1e9, 3) is None


def test_the_board_counts_from_the_last_stream_of_a_proxy_or_from_its_start() -> None:
    now = [100.0]
    board = ProxyStreams(lambda: now[0])
    now[0] = 110.0
    assert board.gone_for("web") == 10.0  # never seen: since the board was made
    board.add(1, dict, "web")
    board.add(2, dict, "web")  # a second stream of the same proxy (a reconnect overlapping)
    assert board.gone_for("web") is None
    now[0] = 120.0
    board.remove(1)
    assert board.gone_for("web") is None  # one stream is left
    board.remove(2)
    now[0] = 125.0
    assert board.gone_for("web") == 5.0
    board.add(3, dict, "web")
    assert board.gone_for("web") is None
