"""The `uqseg merge` command: its options, parsed into :mod:`uqseg_cli.stages.merge` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import JsonOut, Overwrite, Quiet, emit_json


def merge(
    parts: Annotated[
        list[Path] | None, typer.Argument(help="Part files; default: every <out stem>.partK-of-N.h5 next to -o.")
    ] = None,
    out: Annotated[Path, typer.Option("-o", "--output", help="The merged file.")] = Path("predict.h5"),
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Merge even if parts or cases are missing (recorded as failed).")
    ] = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """The parts of a run split with --num-parts/--part-id (e.g. a SLURM array job).

    Refuses parts of different stages or options, overlapping cases, and missing parts or cases.

    Examples:
      uqseg merge -o predict.h5                      # finds predict.part*-of-N.h5
      uqseg merge samples.part0-of-2.h5 samples.part1-of-2.h5 -o samples.h5
    """
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.merge import MergeOptions, run

    options = MergeOptions(parts=parts or [], output=out, allow_missing=allow_missing, overwrite=overwrite)
    result = run(options, Report(quiet or as_json))  # --json: the summary on stdout, no line on stderr
    if as_json:
        emit_json(result.summary)


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
