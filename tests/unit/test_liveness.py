"""When a dataplane counts as gone and what its checks then say (``loom.domain.liveness``),
with a clock the test moves: the start is everyone's last report, a heartbeat keeps a runner
alive for one deadline, a gone runner's checks are written once, and a heartbeat's full state
restores exactly what differs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loom.domain.checks import TCP, CheckDefinition
from loom.domain.liveness import GONE_PREFIX, Heartbeats, gone_writes, restore_writes
from loom.domain.records import Check

TCP_CHECK = CheckDefinition(TCP, tcp="127.0.0.1:1", interval_s=10.0)


def check(cid: str, status: str = "passing", output: str = "ok") -> Check:
    return Check("n", cid, cid, status, output=output, service_id="web", definition=TCP_CHECK,
                 managed=True)  # fmt: skip


def test_the_start_counts_as_every_runners_last_report() -> None:
    beats = Heartbeats(deadline_s=15.0)
    assert beats.interval_s == 5.0
    assert beats.silent_for("web-sidecar-proxy", 100.0) is None  # the first sweep
    assert beats.silent_for("web-sidecar-proxy", 115.0) is None
    assert beats.silent_for("web-sidecar-proxy", 115.5) == 15.5


def test_a_runner_that_appears_later_gets_a_deadline_from_then() -> None:
    beats = Heartbeats(deadline_s=3.0)
    assert beats.silent_for("new-sidecar-proxy", 50.0) is None
    assert beats.silent_for("new-sidecar-proxy", 53.0) is None
    assert beats.silent_for("new-sidecar-proxy", 53.5) == 3.5


def test_a_heartbeat_keeps_its_runner_alive_for_one_deadline_and_no_other() -> None:
    beats = Heartbeats(deadline_s=3.0)
    assert beats.silent_for("b", 0.0) is None
    beats.heard("a", 10.0)
    assert beats.silent_for("a", 13.0) is None
    assert beats.silent_for("b", 13.0) == 13.0
    assert beats.silent_for("a", 13.5) == 3.5


def test_a_zero_deadline_never_declares_anyone_gone() -> None:
    assert Heartbeats(deadline_s=0.0).silent_for("a", 1e9) is None


def test_a_gone_runners_checks_turn_critical_once_saying_why() -> None:
    beats = Heartbeats(deadline_s=3.0)
    beats.heard("web-sidecar-proxy", 1.0)
    owned = {
        "web-sidecar-proxy": [check("service:web"), check("down", "critical", "refused")],
        "api-sidecar-proxy": [check("service:api")],
    }
    assert gone_writes(owned, beats, 0.0) == []  # the first sweep, at the start
    assert gone_writes(owned, beats, 2.9) == []
    # api never reported: gone one deadline after the start; web, one after its heartbeat
    assert [c.check_id for c, _ in gone_writes(owned, beats, 3.5)] == ["service:api"]
    writes = gone_writes(owned, beats, 5.0)
    assert [c.check_id for c, _ in writes] == ["service:api", "service:web"]
    api, web = (out for _, out in writes)
    assert api.startswith(GONE_PREFIX) and "api-sidecar-proxy" in api
    assert "no heartbeat in the 5s since this server started" in api and "deadline 3s" in web
    assert "for 4s since its last heartbeat" in web
    # once critical, a check is not written again
    later = {r: [check(c.check_id, "critical", "x") for c in cs] for r, cs in owned.items()}
    assert gone_writes(later, beats, 100.0) == []


def test_forgetting_keeps_a_recent_heartbeat_of_a_runner_that_owns_nothing_now() -> None:
    beats = Heartbeats(deadline_s=3.0)
    beats.heard("a", 1.0)
    beats.heard("b", 1.0)
    assert beats.silent_for("c", 1.0) is None  # c appears
    beats.forget(["b"], 2.0)
    # a's checks were re-registered a moment ago: a still beats, nothing is new about it
    assert beats.last == {"a": 1.0, "b": 1.0} and beats.appeared == {}
    beats.forget(["b"], 4.5)
    assert beats.last == {"b": 1.0}


def test_a_heartbeat_restores_what_differs_and_ignores_checks_of_others() -> None:
    owned = [check("a", "critical", GONE_PREFIX + "..."), check("b")]
    reported = {"a": ("passing", "ok"), "b": ("passing", "ok"), "theirs": ("passing", "x")}
    writes, ignored = restore_writes(owned, reported)
    assert [(c.check_id, state) for c, state in writes] == [("a", ("passing", "ok"))]
    assert ignored == ["theirs"]


STATE = st.tuples(st.sampled_from(["passing", "warning", "critical"]), st.text(max_size=5))


@given(
    st.dictionaries(st.sampled_from("abcd"), STATE),
    st.dictionaries(st.sampled_from("abcdef"), STATE),
)
def test_after_a_heartbeats_writes_the_stored_states_are_the_reported_ones(
    stored: dict[str, tuple[str, str]], reported: dict[str, tuple[str, str]]
) -> None:
    owned = [check(cid, s, o) for cid, (s, o) in stored.items()]
    writes, ignored = restore_writes(owned, reported)
    after = dict(stored) | {c.check_id: state for c, state in writes}
    for cid, state in reported.items():
        assert after.get(cid) == state if cid in stored else cid in ignored
    assert len(writes) == sum(1 for c, s in reported.items() if c in stored and stored[c] != s)
