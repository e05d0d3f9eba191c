"""The shipped completion scripts are what the CLI generates for each shell (click's protocol), each is valid in
its own shell, and completion lists the real stages and options."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from uqseg_cli.cli.app import STAGES

REPO = Path(__file__).resolve().parents[2]

# what only that shell's script holds (checked when the shell itself is not installed)
MARKERS = {
    "bash": ["_UQSEG_COMPLETE=bash_complete", "complete -o nosort -F _uqseg_completion uqseg", "COMPREPLY"],
    "zsh": ["#compdef uqseg", "_UQSEG_COMPLETE=zsh_complete", "compdef _uqseg_completion uqseg", "_describe"],
    "fish": ["_UQSEG_COMPLETE=fish_complete", "complete --no-files --command uqseg", "(commandline -cp)"],
}


def _run(env_extra: dict, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), **env_extra)
    code = "import sys; sys.argv[0] = 'uqseg'; from uqseg_cli.cli.app import main; main()"
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_current_and_shell_specific(shell):
    generated = _run({"_UQSEG_COMPLETE": f"{shell}_source"})
    shipped = (REPO / "completions" / f"uqseg.{shell}").read_text()
    assert generated == shipped, f"regenerate: _UQSEG_COMPLETE={shell}_source uqseg > completions/uqseg.{shell}"
    for marker in MARKERS[shell]:
        assert marker in shipped, f"{shell}: {marker!r} missing"
    for other in set(MARKERS) - {shell}:
        assert f"{other}_complete" not in shipped, f"uqseg.{shell} holds the {other} protocol"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_parses_in_its_shell(shell):
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed (the markers are checked above)")
    r = subprocess.run([exe, "-n", str(REPO / "completions" / f"uqseg.{shell}")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_bash_completion_lists_every_stage():
    out = _run({"COMP_WORDS": "uqseg ", "COMP_CWORD": "1", "_UQSEG_COMPLETE": "bash_complete"})
    assert out.split() == [f"plain,{s}" for s in STAGES]


def test_zsh_and_fish_completion_carry_help_and_files():
    out = _run({"COMP_WORDS": "uqseg sam", "COMP_CWORD": "1", "_UQSEG_COMPLETE": "zsh_complete"})
    assert out.splitlines()[:2] == ["plain", "sample"] and "MC dropout" in out.splitlines()[2]
    out = _run({"COMP_WORDS": "uqseg sample --meth", "COMP_CWORD": "--meth", "_UQSEG_COMPLETE": "fish_complete"})
    assert out.startswith("plain,--method\t") and "[" not in out.split("\t")[1].replace("[default", "")
    out = _run({"COMP_WORDS": "uqseg predict -i ", "COMP_CWORD": "3", "_UQSEG_COMPLETE": "bash_complete"})
    assert out.strip() == "file,", "a path option completes file names"


def test_typer_install_style_still_answers():
    """``uqseg --install-completion`` writes typer's script, which asks with ``complete_bash``."""
    out = _run({"COMP_WORDS": "uqseg ", "COMP_CWORD": "1", "_UQSEG_COMPLETE": "complete_bash"})
    assert out.split() == list(STAGES)


def test_listing_stages_imports_nothing_heavy():
    code = (
        "import sys; from uqseg_cli.cli.app import app, click; import typer.main as m; "
        "g = m.get_command(app); ctx = click.Context(g); g.format_help(ctx, click.HelpFormatter()); "
        "print(sorted(k for k in ('torch', 'scipy', 'umap', 'timm', 'pandas') if k in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
