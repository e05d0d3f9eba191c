"""The CLI stays thin: every command function only parses, builds the stage's options and calls it."""

from __future__ import annotations

import ast
from pathlib import Path

import uqseg_cli

CLI = Path(uqseg_cli.__file__).parent / "cli"
MAX_BODY_LINES = 40  # option declarations and the docstring aside


def command_bodies() -> dict[str, int]:
    """``{"<file>:<function>": body lines}`` of every function a ``register`` passes to ``app.command(...)``."""
    out = {}
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        registered = {
            a.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Call)
            and getattr(n.func.func, "attr", "") == "command"
            for a in n.args
            if isinstance(a, ast.Name)
        }
        for fn in tree.body:
            if isinstance(fn, ast.FunctionDef) and fn.name in registered:
                body = fn.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]
                out[f"{path.name}:{fn.name}"] = body[-1].end_lineno - body[0].lineno + 1 if body else 0
    return out


def test_every_stage_has_a_command_found_here():
    found = {k.split(":")[1] for k in command_bodies()}
    assert {"train", "predict", "import_", "sample", "uncertainty", "aggregate", "score", "explain", "evaluate",
            "merge", "export", "info", "models", "demo"} <= found


def test_command_bodies_are_short():
    long = {k: n for k, n in command_bodies().items() if n > MAX_BODY_LINES}
    assert not long, f"command functions over {MAX_BODY_LINES} lines (move the work into uqseg_cli/stages): {long}"


def test_no_stage_imports_the_cli_or_typer():
    stages = Path(uqseg_cli.__file__).parent / "stages"
    for path in stages.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                assert not name.startswith(("typer", "click", "uqseg_cli.cli")), f"{path.name} imports {name}"
