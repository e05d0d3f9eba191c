"""The `uqseg` Typer application: stages registered in pipeline order, errors as one line."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from uqseg_cli import __version__
from uqseg_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, UqsegError

# Subcommand modules in pipeline order; each exposes `register(app)`. A stage is listed only when it works.
STAGES: list[str] = [
    "sample",
    "uncertainty",
    "aggregate",
    "score",
    "explain",
    "evaluate",
    "merge",
    "info",
]

app = typer.Typer(
    name="uqseg",
    help="Uncertainty-aware segmentation quality: how good is a segmentation nobody has checked, "
    "and how sure is the model? Stages pass HDF5 files; tables are CSV.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"uqseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Uncertainty-aware segmentation quality prediction (2D photos and 3D CT)."""
    if debug:
        os.environ["UQSEG_DEBUG"] = "1"


for _name in STAGES:
    importlib.import_module(f"uqseg_cli.cli.{_name}").register(app)


def main() -> None:
    """Console entry point: run the app, turning known errors into one line and an exit code."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("UQSEG_DEBUG") == "1"
    try:
        rc = app(standalone_mode=False)
    except UqsegError as exc:
        if debug:
            raise
        typer.echo(f"uqseg: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("uqseg: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:
        # click/typer usage errors carry their own message and exit code (2)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        name = type(exc).__name__
        if name == "Abort":
            typer.echo("uqseg: aborted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        if name == "Exit" and hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        if debug:
            raise
        typer.echo(f"uqseg: error: {name}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(rc if isinstance(rc, int) else 0)
