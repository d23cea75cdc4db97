"""`loom completion bash|zsh`: the script completes commands, options (both spellings) and
files, from the parser tree; bash runs the generated function as it would on a Tab."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from loom.cli import build_parser, main
from loom.cli.completion import command_tree, completion_script


def _complete(script: Path, *words: str) -> list[str]:
    """What bash's completion function offers for the words (the last is being typed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f"source {script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
               '_loom; printf "%s\\n" "${COMPREPLY[@]}"')  # fmt: skip
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "loom.bash"
    path.write_text(completion_script("bash", build_parser()))
    return path


def test_bash_completes_commands_subcommands_and_options(bash_script: Path) -> None:
    assert _complete(bash_script, "loom", "int") == ["intention"]
    assert _complete(bash_script, "loom", "intention", "") == [
        "create", "get", "delete", "check", "match", "list", "explain",
    ]  # fmt: skip
    assert _complete(bash_script, "loom", "intention", "create", "--de") == [
        "--deny", "--description",
    ]  # fmt: skip
    assert _complete(bash_script, "loom", "-v") == ["-version"]


def test_bash_offers_consuls_single_dash_spelling_after_one_dash(bash_script: Path) -> None:
    assert _complete(bash_script, "loom", "intention", "create", "-deny", "-re") == ["-replace"]


def test_bash_completes_files_where_a_command_takes_them(bash_script: Path, tmp_path) -> None:
    (tmp_path / "web.hcl").write_text("")
    typed = str(tmp_path / "we")
    assert _complete(bash_script, "loom", "services", "register", typed) == [
        str(tmp_path / "web.hcl")
    ]
    assert _complete(bash_script, "loom", "local", "run", "web", "--", typed) == [
        str(tmp_path / "web.hcl")
    ]


def test_the_tree_has_every_command_path_and_hides_hidden_options() -> None:
    tree = command_tree(build_parser())
    assert "loom wait proxy" in tree and "loom connect envoy" in tree
    assert "--sidecar-for" in tree["loom connect envoy"][1]
    assert "--leaf-ttl" not in tree["loom server"][1]


def test_loom_completion_prints_each_script(capsys) -> None:
    assert main(["completion", "bash"]) == 0
    assert "complete -o filenames -F _loom loom" in capsys.readouterr().out
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef loom\n")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed here")
def test_the_zsh_script_loads_in_zsh() -> None:
    script = completion_script("zsh", build_parser())
    program = f"autoload -U compinit && compinit -u\n{script}\nprint -r -- ${{_loom_subs[loom]}}"
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "intention" in done.stdout.split()
