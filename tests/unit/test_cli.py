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
