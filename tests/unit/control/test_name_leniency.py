"""A catalog-only service named ``api.v1`` over a real core (in-memory store): registered with
Consul's warning, and left out of what must read every name as a DNS label (the name table,
the federation state other datacenters read strictly)."""

from __future__ import annotations

import json
import logging

import pytest

from loom.control.nametable import name_table_text
from loom.control.state import State
from loom.dns.table import NameTable
from loom.domain.federation import publish, state_from_json, state_to_json
from loom.domain.fields import ValidationError


async def test_a_dotted_name_is_registered_with_consuls_warning_logged_once(
    state: State, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="loom.catalog"):
        await state.catalog.agent_register({"Name": "api.v1", "Port": 80})
    assert [r.getMessage() for r in caplog.records if r.name == "loom.catalog"] == [
        "Service name 'api.v1' will not be discoverable via DNS due to invalid characters. "
        "Valid characters include all alpha-numerics and dashes."
    ]
    assert [i.service for i in state.catalog.instances()] == ["api.v1"]


async def test_a_mesh_use_of_a_dotted_name_is_refused_and_writes_nothing(state: State) -> None:
    before = state.store.index
    with pytest.raises(ValidationError, match="as it is a label of its SNI"):
        await state.catalog.agent_register(
            {"Name": "api.v1", "Port": 80, "Connect": {"SidecarService": {}}}
        )
    assert state.store.index == before and not state.catalog.instances()


async def test_the_name_table_and_the_federation_state_leave_a_dotted_name_out(
    state: State,
) -> None:
    await state.catalog.agent_register({"Name": "api.v1", "Port": 80, "Address": "10.1.0.1"})
    await state.catalog.agent_register({"Name": "api", "Port": 80, "Address": "10.1.0.2"})
    snap = state.snapshot()
    assert {key[1] for key in snap.services} == {"api", "api.v1"}
    table = NameTable.from_json(json.loads(name_table_text(snap)))
    assert [s.name for s in table.services] == ["api"]
    published = publish(snap, ("127.0.0.1:8500",), "2026-12-01T22:00:00Z")
    assert [s.name for s in published.services] == ["api"]
    assert state_from_json(state_to_json(published)) == published  # what a peer reads back
