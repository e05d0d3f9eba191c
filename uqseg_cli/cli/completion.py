"""Shell completion in click's own protocol, for bash, zsh and fish.

``_UQSEG_COMPLETE=bash_source uqseg`` (or ``zsh_source``, ``fish_source``) prints the script for that shell; the
script then calls ``_UQSEG_COMPLETE=<shell>_complete uqseg`` on every <TAB>. Typer (0.29 and later) bundles its own
copy of click without click's shell scripts and answers only its reversed ``source_<shell>``/``complete_<shell>``
instructions (which ``uqseg --install-completion`` still uses); this module gives the click instructions back.

The three script templates and the ``get_completion_args``/``format_completion`` methods are click 8's
(``click/shell_completion.py``, BSD-3-Clause, (c) Pallets): each shell gets its own script, values carry their type
(``plain``, ``file``, ``dir``) so that path options complete file names, and zsh and fish show each item's help.
"""

from __future__ import annotations

import os
import re
from typing import Any

try:  # typer >= 0.29 bundles click
    from typer._click import shell_completion as _sc
except ImportError:  # pragma: no cover - older typer on the real click
    from click import shell_completion as _sc

SHELLS = ("bash", "zsh", "fish")

BASH_SOURCE = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response

    response=$(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD %(complete_var)s=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=($value)
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""

ZSH_SOURCE = """\
#compdef %(prog_name)s

%(complete_func)s() {
    local -a completions
    local -a completions_with_descriptions
    local -a response
    (( ! $+commands[%(prog_name)s] )) && return 1

    response=("${(@f)$(env COMP_WORDS="${words[*]}" COMP_CWORD=$((CURRENT-1)) \
%(complete_var)s=zsh_complete %(prog_name)s)}")

    for type key descr in ${response}; do
        if [[ "$type" == "plain" ]]; then
            if [[ "$descr" == "_" ]]; then
                completions+=("$key")
            else
                completions_with_descriptions+=("$key":"$descr")
            fi
        elif [[ "$type" == "dir" ]]; then
            _path_files -/
        elif [[ "$type" == "file" ]]; then
            _path_files -f
        fi
    done

    if [ -n "$completions_with_descriptions" ]; then
        _describe -V unsorted completions_with_descriptions -U
    fi

    if [ -n "$completions" ]; then
        compadd -U -V unsorted -a completions
    fi
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    # autoload from fpath, call function directly
    %(complete_func)s "$@"
else
    # eval/source/. command, register function for later
    compdef %(complete_func)s %(prog_name)s
fi
"""

FISH_SOURCE = """\
function %(complete_func)s;
    set -l response (env %(complete_var)s=fish_complete COMP_WORDS=(commandline -cp) \
COMP_CWORD=(commandline -t) %(prog_name)s);

    for completion in $response;
        set -l metadata (string split "," $completion);

        if test $metadata[1] = "dir";
            __fish_complete_directories $metadata[2];
        else if test $metadata[1] = "file";
            __fish_complete_path $metadata[2];
        else if test $metadata[1] = "plain";
            echo $metadata[2];
        end;
    end;
end;

complete --no-files --command %(prog_name)s --arguments "(%(complete_func)s)";
"""


def _is_path(param) -> bool:
    desc = getattr(param, "type_descriptor", None)
    if desc is not None:
        return bool(getattr(desc, "is_path", False) or getattr(desc, "is_file", False))
    return type(getattr(param, "type", None)).__name__ in ("Path", "File")  # pragma: no cover - real click


class _Complete(_sc.ShellComplete):
    """Completions as click computes them, plus file-name completion for path options and arguments."""

    def get_completions(self, args: list[str], incomplete: str) -> list:
        ctx = _sc._resolve_context(self.cli, self.ctx_args, self.prog_name, args)
        obj, incomplete = _sc._resolve_incomplete(ctx, args, incomplete)
        items = obj.shell_complete(ctx, incomplete)
        if not items and _is_path(obj):
            items = [_sc.CompletionItem(incomplete, type="file")]
        for item in items:
            if item.help:  # option help is rich markup (cli/app.polish_help): show it as plain text
                item.help = item.help.replace("\\[", "[").split(" [default:")[0]
        return items

    def source_vars(self) -> dict[str, Any]:
        return {"complete_func": self.func_name, "complete_var": self.complete_var, "prog_name": self.prog_name}

    @property
    def func_name(self) -> str:
        safe_name = re.sub(r"\W*", "", self.prog_name.replace("-", "_"), flags=re.ASCII)
        return f"_{safe_name}_completion"


class BashComplete(_Complete):
    name = "bash"
    source_template = BASH_SOURCE

    def get_completion_args(self) -> tuple[list[str], str]:
        cwords = _sc.split_arg_string(os.environ["COMP_WORDS"])
        cword = int(os.environ["COMP_CWORD"])
        args = cwords[1:cword]
        try:
            incomplete = cwords[cword]
        except IndexError:
            incomplete = ""
        return args, incomplete

    def format_completion(self, item) -> str:
        return f"{item.type},{item.value}"


class ZshComplete(BashComplete):
    name = "zsh"
    source_template = ZSH_SOURCE

    def format_completion(self, item) -> str:
        help_ = item.help or "_"
        value = item.value.replace(":", r"\:") if help_ != "_" else item.value
        return f"{item.type}\n{value}\n{help_}"


class FishComplete(_Complete):
    name = "fish"
    source_template = FISH_SOURCE

    def get_completion_args(self) -> tuple[list[str], str]:
        cwords = _sc.split_arg_string(os.environ["COMP_WORDS"])
        incomplete = os.environ["COMP_CWORD"]
        if incomplete:
            incomplete = _sc.split_arg_string(incomplete)[0]
        args = cwords[1:]
        if incomplete and args and args[-1] == incomplete:
            args.pop()
        return args, incomplete

    def format_completion(self, item) -> str:
        if item.help:
            return f"{item.type},{item.value}\t{item.help}"
        return f"{item.type},{item.value}"


CLASSES = {"bash": BashComplete, "zsh": ZshComplete, "fish": FishComplete}


def click_instruction(value: str | None) -> tuple[str, str] | None:
    """``"zsh_source"`` → ``("zsh", "source")``; None for anything that is not click's ``<shell>_<action>``."""
    if not value:
        return None
    shell, _, action = value.partition("_")
    if shell in CLASSES and action in ("source", "complete"):
        return shell, action
    return None


def run(cli, ctx_args, prog_name: str, complete_var: str, shell: str, action: str) -> int:
    """Print the script (``source``) or the completions of the current command line (``complete``)."""
    import sys

    comp = CLASSES[shell](cli, ctx_args, prog_name, complete_var)
    sys.stdout.write(comp.source() if action == "source" else comp.complete() + "\n")
    sys.stdout.flush()
    return 0
