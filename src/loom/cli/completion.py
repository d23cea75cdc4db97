"""``loom completion bash|zsh``: shell completion generated from the parser tree itself.

The script holds, for every command path (``loom``, ``loom intention``, ``loom intention
create``...), its subcommands and its options, read from ``build_parser()`` when the script
is printed; so a command added by any module completes without anything written here. The
shell function walks the words typed so far down that tree (skipping options), then offers
the subcommands, the options (after ``--``, or in Consul's single-dash spelling after
``-``), or file names where the command takes no subcommand.
Pure text generation (``completion_script``); the shell does the rest.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loom.cli import Commands


def command_tree(parser: argparse.ArgumentParser) -> dict[str, tuple[list[str], list[str]]]:
    """``"loom intention create"`` -> (its subcommands, its option strings), every path."""
    tree: dict[str, tuple[list[str], list[str]]] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        subs: list[str] = []
        opts: list[str] = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    subs.append(name)
                    walk(sub, f"{path} {name}")
            elif action.help != argparse.SUPPRESS:
                opts.extend(action.option_strings)
        tree[path] = (subs, sorted(opts))

    walk(parser, "loom")
    return dict(sorted(tree.items()))


def _table(name: str, tree: dict[str, tuple[list[str], list[str]]], which: int) -> str:
    rows = "".join(
        f"  [{shlex.quote(path)}]={shlex.quote(' '.join(v[which]))}\n"
        for path, v in tree.items()
        if v[which]
    )
    return f"{name}=(\n{rows})\n"


_BASH = """\
# bash completion for loom: eval "$(loom completion bash)" (or save it in
# /etc/bash_completion.d/loom); generated from this loom's commands.
declare -A _loom_subs _loom_opts
{subs}{opts}
_loom() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} cmdpath=loom w i
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${{COMP_WORDS[i]}}
    if [[ $w == -- ]]; then  # the command run after --: its own arguments, files
      COMPREPLY=($(compgen -f -- "$cur"))
      return
    fi
    [[ $w == -* ]] && continue
    [[ " ${{_loom_subs[$cmdpath]}} " == *" $w "* ]] && cmdpath="$cmdpath $w"
  done
  if [[ $cur == --* ]]; then
    COMPREPLY=($(compgen -W "${{_loom_opts[$cmdpath]}}" -- "$cur"))
  elif [[ $cur == -* ]]; then  # Consul's spelling: -replace for --replace
    local opts=${{_loom_opts[$cmdpath]}}
    COMPREPLY=($(compgen -W "${{opts//--/-}}" -- "$cur"))
  elif [[ -n ${{_loom_subs[$cmdpath]}} ]]; then
    COMPREPLY=($(compgen -W "${{_loom_subs[$cmdpath]}}" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}}
complete -o filenames -F _loom loom
"""

_ZSH = """\
#compdef loom
# zsh completion for loom: eval "$(loom completion zsh)" after compinit (or save it as _loom
# in a directory of $fpath); generated from this loom's commands.
typeset -gA _loom_subs _loom_opts
{subs}{opts}
_loom() {{
  local cmdpath=loom w i
  for ((i = 2; i < CURRENT; i++)); do
    w=${{words[i]}}
    if [[ $w == -- ]]; then  # the command run after --: its own arguments, files
      _files
      return
    fi
    [[ $w == -* ]] && continue
    [[ " ${{_loom_subs[$cmdpath]}} " == *" $w "* ]] && cmdpath="$cmdpath $w"
  done
  if [[ ${{words[CURRENT]}} == --* ]]; then
    compadd -- ${{=_loom_opts[$cmdpath]}}
  elif [[ ${{words[CURRENT]}} == -* ]]; then  # Consul's spelling: -replace for --replace
    local opts=${{_loom_opts[$cmdpath]}}
    compadd -- ${{=opts//--/-}}
  elif [[ -n ${{_loom_subs[$cmdpath]}} ]]; then
    compadd -- ${{=_loom_subs[$cmdpath]}}
  else
    _files
  fi
}}
compdef _loom loom
"""


def completion_script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (bash or zsh) of ``parser``'s commands."""
    tree = command_tree(parser)
    template = _BASH if shell == "bash" else _ZSH
    return template.format(subs=_table("_loom_subs", tree, 0), opts=_table("_loom_opts", tree, 1))


def _run(args: argparse.Namespace) -> int:
    from loom.cli import build_parser

    sys.stdout.write(completion_script(args.shell, build_parser()))
    return 0


def register(commands: Commands) -> None:
    text = "print the shell completion script for bash or zsh"
    p = commands.top.add_parser(
        "completion",
        help=text,
        description=text + ': eval "$(loom completion bash)" in ~/.bashrc, or '
        'eval "$(loom completion zsh)" in ~/.zshrc after compinit.',
    )
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    p.set_defaults(func=_run)
