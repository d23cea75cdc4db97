from __future__ import annotations

import subprocess
import sys

from loom.cli import main


def test_loom_without_a_command_prints_usage_and_exits_2(capsys) -> None:
    assert main([]) == 2
    assert "usage: loom" in capsys.readouterr().err


def test_python_dash_m_loom_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "--help"], capture_output=True, text=True, check=True
    )
    assert "Loom service mesh" in out.stdout


def test_loom_version_prints_the_package_version(capsys) -> None:
    import pytest

    from loom import __version__
    from loom.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"loom {__version__}\n"
