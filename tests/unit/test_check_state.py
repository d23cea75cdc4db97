"""A check's results move its status as Consul's thresholds say; one runner owns each check."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loom.domain.checks import ALIAS, MAINTENANCE, TCP, CheckDefinition
from loom.domain.checkstate import (
    DATAPLANE,
    NOBODY,
    SERVER,
    Counters,
    aggregate,
    alias_result,
    check_runner,
    reap_due,
    sidecars_by_destination,
    worst,
)
from loom.domain.records import Check, Instance, Proxy
from loom.domain.services import agent_registration

STATUSES = st.sampled_from(["passing", "warning", "critical"])


def tcp(s: int = 0, w: int = 0, c: int = 0) -> CheckDefinition:
    return CheckDefinition(TCP, tcp="x:1", interval_s=1.0, success_before_passing=s,
                           failures_before_warning=w or c, failures_before_critical=c)  # fmt: skip


def run(d: CheckDefinition, results: list[str], start: str = "critical") -> list[str]:
    counters, status, seen = Counters(), start, []
    for result in results:
        counters, moved = counters.step(d, result)
        status = moved or status
        seen.append(status)
    return seen


def test_without_thresholds_every_result_is_reported_at_once() -> None:
    assert run(tcp(), ["passing", "critical", "warning"]) == ["passing", "critical", "warning"]


def test_success_before_passing_holds_the_old_status_until_enough_successes() -> None:
    assert run(tcp(s=3), ["passing", "passing", "passing"]) == ["critical", "critical", "passing"]


def test_a_failure_resets_the_successes() -> None:
    assert run(tcp(s=2), ["passing", "critical", "passing", "passing"]) == [
        "critical", "critical", "critical", "passing"]  # fmt: skip


def test_failures_go_through_warning_before_critical() -> None:
    seen = run(tcp(w=1, c=3), ["critical"] * 3, start="passing")
    assert seen == ["warning", "warning", "critical"]


def test_failures_before_critical_alone_keeps_passing_until_reached() -> None:
    assert run(tcp(c=2), ["critical", "critical"], start="passing") == ["passing", "critical"]


@given(st.lists(STATUSES, max_size=30), st.integers(0, 4), st.integers(0, 4))
def test_a_status_is_only_reported_after_its_threshold_of_equal_results(
    results: list[str], s: int, c: int
) -> None:
    d = tcp(s=s, c=c)
    counters = Counters()
    run_of_ok = run_of_bad = 0
    for result in results:
        counters, moved = counters.step(d, result)
        if result == "critical":
            run_of_bad, run_of_ok = run_of_bad + 1, 0
            assert (moved == "critical") == (run_of_bad >= c)
        else:
            run_of_ok, run_of_bad = run_of_ok + 1, 0
            assert (moved is not None) == (run_of_ok >= s)
            assert moved in (None, result)


@given(st.lists(STATUSES, min_size=1, max_size=20))
def test_without_thresholds_the_status_is_the_last_result(results: list[str]) -> None:
    assert run(tcp(), results)[-1] == results[-1]


def chk(status: str, name: str = "c", output: str = "", sid: str = "web") -> Check:
    return Check("n", name, name, status, output=output, service_id=sid)


def test_an_alias_of_an_instance_without_checks_passes() -> None:
    assert alias_result("web", "n", True, []) == ("passing", "No checks found.")


def test_an_alias_is_the_worst_of_its_targets_checks() -> None:
    checks = [chk("passing", "a"), chk("warning", "b", "slow"), chk("critical", "c", "down")]
    assert alias_result("web", "n", True, checks) == ("critical", "Aliased check 'c' failing: down")
    assert alias_result("web", "n", True, checks[:2])[0] == "warning"
    assert alias_result("web", "n", True, checks[:1]) == ("passing", "All checks passing.")


def test_an_alias_of_a_missing_instance_is_critical() -> None:
    assert alias_result("web", "n", False, []) == (
        "critical", "Service web could not be found on node n")  # fmt: skip


def test_a_maintenance_check_outranks_every_status() -> None:
    maint = Check("n", "_node_maintenance", "m", "critical", type=MAINTENANCE)
    assert aggregate([chk("passing"), maint]) == "maintenance"
    assert aggregate([chk("passing"), chk("warning")]) == "warning"
    assert aggregate([]) == "passing"
    assert worst(["passing", "warning", "critical"]) == "critical"


def _owners(body: dict[str, object]) -> dict[str, tuple[str, str]]:
    reg = agent_registration(body, "n", "dc1")
    proxies = {i.id: i for i in reg.instances if i.proxy is not None}
    sidecars = sidecars_by_destination(reg.instances)
    return {c.check_id: check_runner(c, proxies, sidecars) for c in reg.checks}


def test_the_checks_of_a_service_with_a_sidecar_belong_to_the_sidecars_dataplane() -> None:
    owners = _owners({"Name": "web", "Check": {"TCP": "127.0.0.1:1", "Interval": "1s"},
                      "Connect": {"SidecarService": {}}})  # fmt: skip
    assert owners == {
        "service:web": (DATAPLANE, "web-sidecar-proxy"),
        "service:web-sidecar-proxy:1": (DATAPLANE, "web-sidecar-proxy"),
        "service:web-sidecar-proxy:2": (DATAPLANE, "web-sidecar-proxy"),
    }


def test_the_checks_of_a_service_without_a_sidecar_belong_to_the_server() -> None:
    owners = _owners({"Name": "db", "Checks": [{"TCP": "127.0.0.1:1", "Interval": "1s"},
                                               {"TTL": "10s"}]})  # fmt: skip
    assert owners == {"service:db:1": (SERVER, ""), "service:db:2": (NOBODY, "")}


def test_a_catalog_check_is_run_by_nobody() -> None:
    d = CheckDefinition(ALIAS, alias_service="x")
    check = Check("n", "c", "c", "critical", definition=d, managed=False)
    assert check_runner(check, {}, {}) == (NOBODY, "")


def test_several_sidecars_of_one_instance_leave_its_checks_to_the_lowest_id() -> None:
    sides = [Instance("n", "dc1", sid, "web-sidecar-proxy", kind="connect-proxy",
                      proxy=Proxy("web", "web")) for sid in ("web-b", "web-a")]  # fmt: skip
    assert sidecars_by_destination(sides) == {("n", "default", "web"): "web-a"}


def test_a_service_is_reaped_after_its_deregister_time_and_never_under_a_minute() -> None:
    d = CheckDefinition(TCP, tcp="x:1", interval_s=1.0, deregister_after_s=10.0)
    assert not reap_due(100.0, d, 159.0)
    assert reap_due(100.0, d, 160.0)
    assert not reap_due(None, d, 1000.0)
    assert not reap_due(0.0, CheckDefinition(TCP, tcp="x:1"), 1000.0)
