"""``loom.local`` has one exception root, and what it calls is wrapped into it (no root needed)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import loom.local
from loom.cli import main
from loom.inject import InjectError
from loom.keyvalue import KeyValueError
from loom.local import processes
from loom.local.errors import (
    LocalError,
    LocalProcessError,
    LocalStateError,
    WorkloadError,
    WorkloadRefused,
    state_io,
)
from loom.local.mesh import LocalMesh, LocalSettings
from loom.local.netns import LocalNetSettings
from loom.local.workload import parse_annotations


def test_every_exception_class_of_the_package_derives_from_local_error() -> None:
    found = []
    for module in pkgutil.iter_modules(loom.local.__path__, "loom.local."):
        for _, cls in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("loom.local"):
                found.append(cls)
                assert issubclass(cls, LocalError), cls
    assert len(set(found)) >= 8  # the root and its seven kinds, all in errors.py
    assert {cls.__module__ for cls in found} == {"loom.local.errors"}


def test_a_refused_annotation_is_a_workload_refused_with_the_injectors_message(
    tmp_path: Path,
) -> None:
    mesh = LocalMesh(LocalSettings(net=LocalNetSettings(prefix="lte", state_dir=tmp_path)))
    with pytest.raises(WorkloadRefused) as info:
        mesh.run("web", [8080], {"transparent-proxy": "maybe"}, ["true"])
    assert isinstance(info.value.__cause__, InjectError)
    assert str(info.value) == str(info.value.__cause__)
    assert str(info.value).startswith("consul.hashicorp.com/transparent-proxy='maybe': ")
    assert list(tmp_path.iterdir()) == []  # refused before anything was made


def test_a_program_that_cannot_start_is_a_local_process_error(tmp_path: Path) -> None:
    with pytest.raises(LocalProcessError, match="cannot start /nonexistent/loom-x: No such file"):
        processes.spawn(["/nonexistent/loom-x"], tmp_path / "x.log")


def test_a_state_file_that_cannot_be_written_is_a_local_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with (
        pytest.raises(LocalStateError, match="cannot record: Not a directory") as info,
        state_io("cannot record"),
    ):
        (tmp_path / "file" / "below").write_text("")
    assert isinstance(info.value.__cause__, OSError)


def test_a_malformed_annotation_flag_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOOM_LOCAL_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LOOM_LOCAL_PREFIX", "lte")
    with pytest.raises(WorkloadError) as info:
        parse_annotations(["novalue"])
    assert isinstance(info.value.__cause__, KeyValueError)
    assert main(["local", "run", "web", "--annotation", "novalue", "--", "true"]) == 2
    assert capsys.readouterr().err == "loom: --annotation 'novalue': expected KEY=VALUE\n"
    assert list(tmp_path.iterdir()) == []
