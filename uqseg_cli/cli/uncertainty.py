"""The `uqseg uncertainty` command: its options, parsed into :mod:`uqseg_cli.stages.uncertainty` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from uqseg_cli.bayes.measures import MEASURES
from uqseg_cli.cli.common import (
    CpuDevice,
    JsonOut,
    NumParts,
    Overwrite,
    PartId,
    Quiet,
    Threads,
    cpu_stage_device,
    finish,
    stage_json,
)
from uqseg_cli.cli.params import complete_list
from uqseg_cli.parsing import split_list


def uncertainty(
    input: Annotated[
        Path | None, typer.Option("-i", "--input", help="samples.h5 from `uqseg sample` [default: ./samples.h5].")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file, e.g. -o uncertainty.h5.")] = Path(
        "uncertainty.h5"
    ),
    methods: Annotated[
        list[str] | None,
        typer.Option("--method", help="Methods of samples.h5 (comma list or repeat) [default: all it holds]."),
    ] = None,
    measures: Annotated[
        list[str] | None,
        typer.Option(
            "--measure",
            autocompletion=complete_list(MEASURES),
            help="confidence, entropy, expected_entropy, mutual_information, epkl (comma list or repeat) "
            "[default: all]. e.g. --measure entropy,mutual_information",
        ),
    ] = None,
    epkl_pairs: Annotated[
        Literal["all", "distinct"],
        typer.Option(
            "--epkl-pairs",
            help="EPKL as the mean KL over all T² ordered sample pairs, or over the T(T-1) distinct pairs "
            "(= all × T/(T-1)); recorded in the file.",
        ),
    ] = "all",
    dtype: Annotated[
        Literal["float32", "float16"], typer.Option("--dtype", help="Storage dtype of the maps.")
    ] = "float32",
    num_parts: NumParts = None,
    part_id: PartId = None,
    device: CpuDevice = "auto",
    threads: Threads = 0,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Exact for any number of samples T: everything follows from the sums Σp, Σlog p, ΣH[p] in samples.h5.
    Also writes <method>/mean_segmentation (argmax of the mean prediction).

    Examples:
      uqseg uncertainty                                        # samples.h5 -> uncertainty.h5
      uqseg uncertainty -i samples.h5 --method tta --measure entropy,mutual_information -o tta_unc.h5
      uqseg uncertainty --epkl-pairs distinct --dtype float16
    """
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.uncertainty import UncertaintyOptions, run

    cpu_stage_device(device, "uncertainty", quiet)
    options = UncertaintyOptions(
        input=input, output=output, methods=split_list(methods), measures=split_list(measures),
        epkl_pairs=epkl_pairs, dtype=dtype, num_parts=num_parts, part_id=part_id, overwrite=overwrite,
        device=device, threads=threads,
    )
    result = run(options, Report(quiet))
    if json_out:
        stage_json(result)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("uncertainty")(uncertainty)
