"""The one-line summary of each stage is written once, in ``cli/app.py``'s ``SUMMARIES``: ``uqseg --help``,
completion and the first paragraph of every ``uqseg <stage> --help`` come from it, and no command docstring (nor
the docstring of the command's module) says it again."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
import typer
from typer.testing import CliRunner

from uqseg_cli.cli.app import MODULES, STAGES, SUMMARIES, app, command_help

# Command modules that other work owns and that still restate their summary; strict, so each entry must go as
# soon as its docstring is fixed (the fix: drop the restating first paragraph / module line).
PENDING_COMMAND: set[str] = set()
PENDING_MODULE: set[str] = set()


def _words(text: str) -> list[str]:
    """Lower-case words, a plural ``s`` dropped (``parts`` ~ ``part``)."""
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[a-z0-9²]+", text.lower())]


def restates(doc: str | None, summary: str, run: int = 5) -> str | None:
    """How the first paragraph of ``doc`` restates ``summary`` (the same first three words, or ``run`` words in a
    row), or None."""
    d, s = _words((doc or "").split("\n\n")[0]), _words(summary)
    if d[:3] == s[:3]:
        return "starts with " + " ".join(d[:3])
    grams = {tuple(s[i : i + run]) for i in range(len(s) - run + 1)}
    return next((" ".join(d[i : i + run]) for i in range(len(d) - run + 1) if tuple(d[i : i + run]) in grams), None)


def _command(stage: str):
    """The module of a stage and its command function, as its own ``register`` registers it."""
    module = importlib.import_module(f"uqseg_cli.cli.{MODULES.get(stage, stage)}")
    sub = typer.Typer()
    module.register(sub)
    (info,) = sub.registered_commands
    return module, info.callback


def _pending(stage: str, pending: set[str]):
    marks = [pytest.mark.xfail(strict=True, reason="owned elsewhere; restates its summary")] if stage in pending else []
    return pytest.param(stage, marks=marks)


def test_every_stage_has_one_summary():
    assert list(SUMMARIES) == STAGES
    for stage, line in SUMMARIES.items():
        assert "\n" not in line and line.endswith("."), stage


@pytest.mark.parametrize("stage", [_pending(s, PENDING_COMMAND) for s in STAGES])
def test_command_docstring_does_not_restate_the_summary(stage):
    _, fn = _command(stage)
    doc = inspect.getdoc(fn)
    assert doc, f"{stage}: the command has no docstring (its --help needs examples)"
    how = restates(doc, SUMMARIES[stage])
    assert how is None, f"{stage}: the docstring restates SUMMARIES[{stage!r}] ({how}); start with what follows it"


@pytest.mark.parametrize("stage", [_pending(s, PENDING_MODULE) for s in STAGES])
def test_module_docstring_does_not_restate_the_summary(stage):
    module, _ = _command(stage)
    how = restates(module.__doc__, SUMMARIES[stage])
    assert how is None, f"{stage}: {module.__name__}'s docstring restates SUMMARIES[{stage!r}] ({how})"


def test_restates_catches_copies_and_spares_other_text():
    s = "Join the part files of a sharded stage run into one file."
    assert restates(s, s) and restates("`uqseg merge`: join the part files of a sharded stage.", s)
    assert restates("Join the parts of a run split with --num-parts.", s)
    assert restates("Refuses parts of different stages or options.", s) is None


@pytest.mark.parametrize("stage", STAGES)
def test_help_starts_with_the_summary_then_the_docstring(stage):
    r = CliRunner().invoke(app, [stage, "--help"], env={"COLUMNS": "250", "TERM": "dumb"}, terminal_width=250)
    assert r.exit_code == 0, r.output
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", r.output) if p.strip()]
    assert paragraphs[0].startswith("Usage:") and paragraphs[1] == SUMMARIES[stage]
    _, fn = _command(stage)
    first = " ".join(inspect.getdoc(fn).split("\n\n")[0].split())
    assert paragraphs[2] == first


def test_command_help_joins_summary_and_docstring():
    assert command_help("merge", "Body.\n\nExamples:\n  uqseg merge") == (
        f"{SUMMARIES['merge']}\n\nBody.\n\nExamples:\n  uqseg merge"
    )
    assert command_help("merge", None) == SUMMARIES["merge"]
