"""The `uqseg aggregate` command: its options, parsed into :mod:`uqseg_cli.stages.aggregate` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from uqseg_cli.bayes.measures import MEASURES
from uqseg_cli.bayes.sampling import METHODS
from uqseg_cli.cli.common import (
    CpuDevice,
    JsonOut,
    Overwrite,
    Quiet,
    Threads,
    cpu_stage_device,
    emit_json,
    finish,
)
from uqseg_cli.cli.params import complete_list
from uqseg_cli.errors import UqsegError
from uqseg_cli.parsing import split_list

Region = Literal["image", "foreground", "band", "patchmax", "quantile"]  # = quality.regions.REGIONS (tested)


def aggregate(
    input: Annotated[
        Path | None,
        typer.Option("-i", "--input", help="uncertainty.h5 from `uqseg uncertainty`. (default: uncertainty.h5)"),
    ] = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="Feature CSV, or - for standard output. e.g. -o features.csv")
    ] = "features.csv",
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            autocompletion=complete_list(METHODS),
            help="Methods to read (repeat or comma list), e.g. tta (default: all).",
        ),
    ] = None,
    measure: Annotated[
        list[str] | None,
        typer.Option(
            "--measure",
            autocompletion=complete_list(MEASURES),
            help="Measures to read (repeat or comma list), e.g. entropy (default: all).",
        ),
    ] = None,
    band_width: Annotated[
        int, typer.Option("--band-width", min=1, help="Half-width (voxels) of the band around the predicted boundary.")
    ] = 3,
    patch_size: Annotated[
        int, typer.Option("--patch-size", min=1, help="Edge (voxels) of the sliding window of the patch-max score.")
    ] = 32,
    quantile: Annotated[
        float,
        typer.Option("--quantile", min=0.0, max=0.999, help="Mean of the voxels above this quantile, e.g. 0.9."),
    ] = 0.9,
    wide: Annotated[
        bool, typer.Option("--wide", help="One row per case, one column per method.measure.region.")
    ] = False,
    combine: Annotated[
        list[str] | None,
        typer.Option(
            "--combine",
            help="Measures combined into the score 'combined' (comma list), e.g. entropy,mutual_information "
            "(default: all read measures); 'none' for no combined score.",
        ),
    ] = None,
    combine_region: Annotated[
        Region, typer.Option("--combine-region", help="Region of the combined features.")
    ] = "foreground",
    weights: Annotated[
        Literal["equal", "learned"],
        typer.Option(
            "--weights",
            help="equal (mean of z-scores) or learned (ridge on 1 - Dice over the cases with a reference).",
        ),
    ] = "equal",
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, help="Ridge penalty of --weights learned.")] = 1.0,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="Reuse saved z-score statistics and weights (a stats.json of an earlier run), so a new batch is "
            "scored on the same scale, e.g. --reference train/features.stats.json.",
        ),
    ] = None,
    stats_out: Annotated[
        Path | None,
        typer.Option(
            "--stats-out", help="Where to save the combined-score statistics (default: <output stem>.stats.json)."
        ),
    ] = None,
    correlate: Annotated[
        Path | None,
        typer.Option(
            "--correlate",
            help="Also write Pearson/Spearman of every feature with Dice, IoU and HD95 (mm) over the cases with a "
            "reference, sorted, e.g. --correlate correlations.csv.",
        ),
    ] = None,
    device: CpuDevice = "auto",
    threads: Threads = 0,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Per case, method and measure: mean over the whole image, the predicted foreground, a band around the predicted
    boundary, the max of sliding-window means, and the mean above a quantile; per case and method: the predicted
    volume (ml) and the spread (std, CV) of the sampled volumes; per case and method the combined score (z-scored
    measures, averaged). Long CSV columns: case,method,measure,region,value.

    Examples:
      uqseg aggregate                                   # uncertainty.h5 -> features.csv (+ features.stats.json)
      uqseg aggregate -i new/uncertainty.h5 -o new/features.csv --reference features.stats.json
      uqseg aggregate --method tta --wide -o - | head
      uqseg aggregate --weights learned --correlate correlations.csv
    """
    from uqseg_cli.stages.aggregate import AggregateOptions, run
    from uqseg_cli.stages.base import Report

    cpu_stage_device(device, "aggregate", quiet)
    if as_json and output == "-":
        raise UqsegError("--json and -o - both write to standard output; pick one")
    options = AggregateOptions(
        input=input, output=output, methods=split_list(method), measures=split_list(measure),
        band_width=band_width, patch_size=patch_size, quantile=quantile, wide=wide, combine=split_list(combine),
        combine_region=combine_region, weights=weights, alpha=alpha, reference=reference, stats_out=stats_out,
        correlate=correlate, overwrite=overwrite, device=device, threads=threads,
    )
    result = run(options, Report(quiet))
    if as_json:
        emit_json(result.summary)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("aggregate")(aggregate)

