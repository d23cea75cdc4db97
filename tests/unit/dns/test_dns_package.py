"""``loom.dns`` loads its names on first use: each one still resolves, to its home's object."""

from __future__ import annotations

import importlib

import pytest

import loom.dns


def test_every_exported_name_is_the_object_its_home_module_defines() -> None:
    for name in loom.dns.__all__:
        value = getattr(loom.dns, name)
        home = importlib.import_module(value.__module__)
        assert getattr(home, name) is value, name


def test_star_import_gives_every_exported_name() -> None:
    namespace: dict[str, object] = {}
    exec("from loom.dns import *", namespace)
    assert set(loom.dns.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Resolver'"):
        loom.dns.Resolver  # type: ignore[attr-defined]  # noqa: B018
