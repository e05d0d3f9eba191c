"""The `uqseg evaluate` command: its options, parsed into :mod:`uqseg_cli.stages.evaluate` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from uqseg_cli.cli.common import (
    CpuDevice,
    JsonOut,
    NumParts,
    Overwrite,
    PartId,
    Quiet,
    Threads,
    cpu_stage_device,
    emit_json,
    finish,
)
from uqseg_cli.cli.params import complete_list
from uqseg_cli.errors import UqsegError
from uqseg_cli.metrics.crps import CRPS_MODES
from uqseg_cli.metrics.evaluation import DEFAULT_BINS
from uqseg_cli.parsing import split_list


def evaluate(
    input: Annotated[
        Path | None,
        typer.Option(
            "-i",
            "--input",
            help="predict.h5 (deterministic prediction) or samples.h5 (mean of the T samples per method); "
            "must hold rater masks (predict --raters). (default: samples.h5 if present, else predict.h5)",
        ),
    ] = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="Per-case CSV, or - for standard output. e.g. -o metrics.csv")
    ] = "metrics.csv",
    method: Annotated[
        list[str] | None,
        typer.Option("--method", help="samples.h5 methods to evaluate (repeat or comma list) (default: all)."),
    ] = None,
    bins: Annotated[
        int | None,
        typer.Option(
            "--bins", min=1, help=f"Equal-width calibration bins (default: {DEFAULT_BINS}; 50 in curvas2024)."
        ),
    ] = None,
    crps: Annotated[
        list[str] | None,
        typer.Option(
            "--crps",
            autocompletion=complete_list(CRPS_MODES),
            help="Volume CRPS mode(s): gaussian (closed form), curvas (challenge code, truncated to mu+-3sigma), "
            "ensemble (T sampled volumes; samples.h5). Repeat or comma list. (default: gaussian; curvas in "
            "curvas2024)",
        ),
    ] = None,
    protocol: Annotated[
        Literal["uqseg", "curvas2024"],
        typer.Option(
            "--protocol",
            help="uqseg, or curvas2024 (crop to the in-plane box of image > 0, background = 1 - sum(foreground), "
            "50 bins, CRPS curvas) to compare with published CURVAS results.",
        ),
    ] = "uqseg",
    bins_out: Annotated[
        Path | None,
        typer.Option("--bins-out", help="Per-bin calibration sums (default: <output stem>.bins.csv)."),
    ] = None,
    summary_out: Annotated[
        Path | None,
        typer.Option("--summary-out", help="Summary per class over cases (default: <output stem>.summary.csv)."),
    ] = None,
    merge_parts: Annotated[
        bool,
        typer.Option(
            "--merge-parts",
            help="Do not read HDF5: join <output stem>.partK-of-N.csv (and their .bins.csv) into -o, "
            "with the exact dataset-level calibration.",
        ),
    ] = False,
    num_parts: NumParts = None,
    part_id: PartId = None,
    device: CpuDevice = "auto",
    threads: Threads = 0,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Per case and class: consensus/dissensus, Dice against the consensus (dissensus removed), each rater, the
    majority vote and the mean rater mask; the CURVAS confidence; ECE (top-label, class-wise, foreground), MCE,
    ACE, Brier and NLL against each rater (averaged); volumes (ml) and volume CRPS. Per-bin calibration sums go to
    <stem>.bins.csv so shards merge into an exact dataset-level ECE; the summary to <stem>.summary.csv.

    Examples:
      uqseg evaluate -i predict.h5 -o metrics.csv
      uqseg evaluate -i samples.h5 --method tta --crps gaussian,ensemble --json
      uqseg evaluate -i predict.h5 --protocol curvas2024 -o curvas.csv
      uqseg evaluate -i predict.h5 --num-parts 4 --part-id 0   # then: uqseg evaluate --merge-parts
    """
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.evaluate import EvaluateOptions, run

    cpu_stage_device(device, "evaluate", quiet)
    options = EvaluateOptions(
        input=input, output=Path(output), methods=split_list(method), protocol=protocol, bins=bins,
        crps=split_list(crps), bins_out=bins_out, summary_out=summary_out, merge_parts=merge_parts,
        num_parts=num_parts, part_id=part_id, overwrite=overwrite, device=device, threads=threads,
    )
    if as_json and options.to_stdout:
        raise UqsegError("--json and -o - both write to standard output; pick one")
    result = run(options, Report(quiet))
    if as_json:
        emit_json(result.summary)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
