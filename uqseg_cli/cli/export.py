"""The `uqseg export` command: its options, parsed into :mod:`uqseg_cli.stages.export` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from uqseg_cli.cli.common import JsonOut, Overwrite, Quiet, emit_json
from uqseg_cli.parsing import split_list


def export(
    input: Annotated[
        Path | None,
        typer.Option("-i", "--input", help="Any stage file: predict.h5, samples.h5, uncertainty.h5, explain/gradcam-"
                     "*.h5 (default: uncertainty.h5, else predict.h5)."),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder: <out>/<case>/<map>.nii.gz|.png.")] = (
        Path("export")
    ),
    maps: Annotated[
        list[str] | None,
        typer.Option("--map", help="Maps to write (comma list or repeat), e.g. segmentation,probabilities,"
                     "tta/entropy,gradcam; any array of the file or its parents (default: the file's own maps "
                     "and the segmentation)."),
    ] = None,
    cases: Annotated[
        list[str] | None, typer.Option("--cases", help="Only these case ids (comma list or repeat).")
    ] = None,
    fmt: Annotated[
        Literal["auto", "nifti", "png", "both"],
        typer.Option("--format", help="auto (NIfTI, plus PNG overlays for 2D cases), nifti, png (2D only) or both."),
    ] = "auto",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """The maps overlay the original image exactly in 3D Slicer, ITK-SNAP or napari. PNG overlays show label maps
    in class colours and uncertainty on a fixed scale: entropy and mutual information 0..ln K nats, probabilities
    and confidence 0..1.

    Files made before the affine was recorded get a spacing-only affine (with a warning).

    Examples:
      uqseg export                                            # uncertainty.h5 -> export/<case>/*.nii.gz
      uqseg export -i predict.h5 --map segmentation,probabilities -o viewer/
      uqseg export -i uncertainty.h5 --map tta/entropy,segmentation --cases case01
      uqseg export -i explain/gradcam-lower.h5 --map gradcam --format both
    """
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.export import ExportOptions, run

    options = ExportOptions(input=input, output=output, maps=split_list(maps), cases=split_list(cases), format=fmt,
                            overwrite=overwrite)
    result = run(options, Report(quiet))
    if as_json:
        emit_json({"output": str(result.out), **result.summary})


def register(app: typer.Typer) -> None:
    app.command("export")(export)
