"""Fixtures many unit tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from loom.control.state import ServerSettings, State
from loom.store import Store


@pytest.fixture
async def state() -> AsyncIterator[State]:
    """A started server state over an in-memory store (a module may define its own)."""
    st = State(ServerSettings(), store=Store())
    await st.start()
    try:
        yield st
    finally:
        await st.close()
