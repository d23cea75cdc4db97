"""Fixtures of the DNS proxy's unit tests (the inputs live in dnstest.py)."""

from __future__ import annotations

import pytest

from loom.dns.cache import ResponseCache
from loom.dns.handler import PacketHandler
from loom.dns.metrics import Metrics
from loom.dns.resolve import View
from loom.dns.table import NameTable
from tests.unit.dns.dnstest import MESH, SEARCH


@pytest.fixture
def table() -> NameTable:
    return NameTable.from_json(MESH)


@pytest.fixture
def view() -> View:
    return View(namespace="ns1", cluster_domain="cluster.local", search=SEARCH)


@pytest.fixture
def handler(table: NameTable, view: View) -> PacketHandler:
    return PacketHandler(table, view, ResponseCache(100), Metrics())
