"""The ``uqseg demo`` command: options → cli/demo_run.py (which drives the stage commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import Device, JsonOut, Overwrite, Quiet, Threads, emit_json
from uqseg_cli.stages.device import apply_threads


def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the demo run.")] = Path("uqseg-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="A tiny run (16 cases, 2 epochs) for smoke tests.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Segmenter epochs (default 25).")] = None,
    device: Device = "auto",
    threads: Threads = 0,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Synthetic lesion photos with a reference and three raters go through train, predict, sample, uncertainty,
    aggregate, score, evaluate and explain; then it prints what it found (and writes it to summary.json).

    Example: uqseg demo -o uqseg-demo && open uqseg-demo/explain/report.html
    """
    from uqseg_cli.cli.demo_run import DemoConfig, prepare_folder, print_summary, run_demo, write_summary

    prepare_folder(output, overwrite)
    apply_threads(threads)
    summary = run_demo(output, DemoConfig.of(quick, epochs), device=device, quiet=quiet)
    write_summary(output, summary)
    if as_json:
        emit_json(summary)
    else:
        print_summary(summary)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
