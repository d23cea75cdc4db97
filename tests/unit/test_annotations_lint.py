"""The misspelling lint knows every annotation the injector names: a new ``consul.hashicorp.com/``
constant in ``loom.inject.annotations`` that is neither read nor written fails here, so the lint
cannot go stale and warn about an annotation Loom does read."""

from __future__ import annotations

from loom.inject import annotations as ann
from loom.inject.lint import misspelled


def _named() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(ann).items()
        if name.isupper() and isinstance(value, str) and value.startswith(ann.PREFIX)
        and name not in ("PREFIX", "SERVICE_META_PREFIX")
    }


def test_every_annotation_constant_is_read_or_written() -> None:
    unknown = {n: v for n, v in _named().items() if v not in ann.READ + ann.WRITTEN}
    assert not unknown


def test_no_annotation_loom_reads_or_writes_is_reported_as_misspelled() -> None:
    assert misspelled({v: "x" for v in _named().values()}) == []


def test_a_misspelled_annotation_names_the_nearest_one_loom_reads() -> None:
    [warning] = misspelled({ann.PREFIX + "conect-service": "web"})
    assert f"did you mean {ann.CONNECT_SERVICE}?" in warning
