"""The agent's checks over a real in-memory store: who runs each one, reaping, maintenance,
and the dataplane's view of which checks are its own."""

from __future__ import annotations

from loom.control.state import ServerSettings, State
from loom.dataplane.checks import check_of, owned, owns_destination
from loom.server import views
from loom.store import Store

TCP = {"TCP": "127.0.0.1:1", "Interval": "1s"}


async def _state() -> State:
    state = State(ServerSettings(), Store())
    await state.store.open()
    return state


async def test_the_server_runs_only_the_checks_no_sidecar_owns() -> None:
    state = await _state()
    await state.catalog.agent_register({"Name": "db", "Check": TCP})
    await state.catalog.agent_register(
        {"Name": "web", "Check": TCP, "Connect": {"SidecarService": {}}}
    )
    await state.catalog.agent_register({"Name": "cache", "Check": {"TTL": "10s"}})
    assert [c.check_id for c in state.agent_checks.server_owned()] == ["service:db"]


async def test_a_sidecar_registered_later_takes_its_instances_checks_from_the_server() -> None:
    state = await _state()
    await state.catalog.agent_register({"Name": "web", "Check": TCP})
    assert [c.check_id for c in state.agent_checks.server_owned()] == ["service:web"]
    await state.catalog.agent_register({"Name": "web-sidecar-proxy", "Kind": "connect-proxy",
                                        "Port": 21000, "Proxy": {
                                            "DestinationServiceName": "web",
                                            "DestinationServiceID": "web"}})  # fmt: skip
    assert state.agent_checks.server_owned() == []


async def test_a_service_critical_past_its_deregister_time_is_due_for_reaping() -> None:
    state = await _state()
    check = {**TCP, "DeregisterCriticalServiceAfter": "1m"}
    await state.catalog.agent_register({"Name": "web", "Check": check})
    checks = state.agent_checks
    assert checks.due_for_reaping(now=100.0) == []
    assert checks.due_for_reaping(now=159.0) == []
    assert checks.due_for_reaping(now=160.0) == ["web"]
    await state.catalog.update_check("service:web", "passing", "")
    assert checks.due_for_reaping(now=500.0) == []  # passing: the clock starts again
    await state.catalog.update_check("service:web", "critical", "")
    assert checks.due_for_reaping(now=501.0) == []


async def test_the_dataplane_reads_its_checks_back_from_the_agents_answer() -> None:
    state = await _state()
    await state.catalog.agent_register(
        {"Name": "web", "Checks": [TCP, {"TTL": "5s"}], "Connect": {"SidecarService": {}}}
    )
    await state.catalog.agent_register({"Name": "db", "Check": TCP})
    docs = {c.check_id: views.health_check(c, 1) for c in state.catalog.checks_on("loom-server")}
    mine = owned(docs, "web-sidecar-proxy", "web", scripts=False)
    assert sorted(c.check_id for c in mine) == [
        "service:web-sidecar-proxy:1", "service:web-sidecar-proxy:2", "service:web:1"]  # fmt: skip
    by_id = {c.check_id: c for c in state.catalog.checks_on("loom-server")}
    for c in mine:
        assert c.definition == by_id[c.check_id].definition
    assert [c.check_id for c in owned(docs, "web-sidecar-proxy", "web", False, False)] == [
        "service:web-sidecar-proxy:1", "service:web-sidecar-proxy:2"]  # fmt: skip


def test_a_script_check_is_left_alone_without_the_dataplanes_opt_in() -> None:
    doc = {"CheckID": "s", "Node": "n", "Name": "s", "Status": "critical", "ServiceID": "web",
           "Definition": {"ScriptArgs": ["true"], "Interval": "1s"}}  # fmt: skip
    assert check_of(doc, scripts=False) is None
    found = check_of(doc, scripts=True)
    assert found is not None and found.definition is not None
    assert found.definition.args == ("true",)


def test_of_two_sidecars_of_one_instance_the_lowest_id_runs_its_checks() -> None:
    services = {sid: {"Kind": "connect-proxy", "Proxy": {"DestinationServiceID": "web"}}
                for sid in ("web-b", "web-a")}  # fmt: skip
    assert owns_destination(services, "web-a", "web")
    assert not owns_destination(services, "web-b", "web")
    assert owns_destination({}, "web-a", "web")
