"""The shipped completion scripts are what the CLI generates, and completion lists the real stages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from uqseg_cli.cli.app import STAGES

REPO = Path(__file__).resolve().parents[2]


def _run(env_extra: dict, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), **env_extra)
    code = "import sys; sys.argv[0] = 'uqseg'; from uqseg_cli.cli.app import main; main()"
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    return r.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_current(shell):
    shipped = (REPO / "completions" / f"uqseg.{shell}").read_text()
    assert _run({}, "--show-completion", shell) == shipped, f"regenerate: uqseg --show-completion {shell}"


def test_bash_completion_lists_every_stage():
    out = _run({"COMP_WORDS": "uqseg ", "COMP_CWORD": "1", "_UQSEG_COMPLETE": "complete_bash"})
    assert out.split() == [s.replace("_", "-") for s in STAGES]


def test_listing_stages_imports_nothing_heavy():
    code = (
        "import sys; from uqseg_cli.cli.app import app; import typer.main as m; "
        "g = m.get_command(app); import click; ctx = click.Context(g); g.format_help(ctx, click.HelpFormatter()); "
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
