"""Fixtures the xDS unit tests share: a started hub over the ``state`` fixture (a module
that wants services registered before the hub starts overrides ``state``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from loom.control.state import State
from loom.xds.hub import Hub


@pytest.fixture
async def hub(state: State) -> AsyncIterator[Hub]:
    """A started ``Hub`` over ``state``, stopped afterwards (the state is closed by its own
    fixture)."""
    started = Hub(state)
    started.start()
    try:
        yield started
    finally:
        await started.stop()
