"""`uqseg demo`: run the whole pipeline on built-in synthetic data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import Device, JsonOut, Overwrite, Quiet, Threads, apply_threads
from uqseg_cli.errors import UqsegError


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
    """Generate synthetic lesion photos with a reference and three raters, then run every stage on them:
    train, predict, sample, uncertainty, aggregate, score, evaluate, explain. Prints what it found.

    Example: uqseg demo -o uqseg-demo && open uqseg-demo/explain/report.html
    """
    from uqseg_cli.cli.demo_run import DemoConfig, print_summary, run_demo

    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise UqsegError(f"{output}: exists and is not empty; pass --overwrite or choose another -o")
        shutil.rmtree(output)
    apply_threads(threads)
    cfg = DemoConfig.quick() if quick else DemoConfig()
    if epochs is not None:
        cfg = DemoConfig(**{**cfg.__dict__, "epochs": epochs})
    summary = run_demo(output, cfg, device=device, quiet=quiet)
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
