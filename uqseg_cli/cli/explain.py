"""The `uqseg explain` command: its options, parsed into :mod:`uqseg_cli.stages.explain` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from uqseg_cli.cli.common import (
    BatchSize,
    Device,
    JsonOut,
    Overwrite,
    Quiet,
    Seed,
    Threads,
    emit_json,
    finish,
)


def explain(
    input: Annotated[
        Path | None,
        typer.Option(
            "-i",
            "--input",
            help="scores.csv from `uqseg score`, or uncertainty.h5 (any stage file holding the cases) "
            "[default: ./scores.csv, else ./uncertainty.h5]. e.g. -i scores.csv",
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "-m",
            "--model",
            help="Quality model (CNN framework) from `uqseg score` [default: quality.pt beside the input, if "
            "present]. Without one only the plots, feature UMAP and report are made. e.g. --model quality.pt",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder, e.g. -o explain/.")] = Path(
        "explain"
    ),
    h5: Annotated[
        Path | None,
        typer.Option(
            "--h5",
            help="With -i scores.csv: the stage file holding the cases [default: uncertainty.h5 beside it].",
        ),
    ] = None,
    direction: Annotated[
        Literal["high", "low"],
        typer.Option(
            "--direction",
            help="high: pixels that raise the predicted Dice (target = output); low: pixels that lower it "
            "(target = -output). e.g. --direction low",
        ),
    ] = "high",
    cam: Annotated[
        Literal["gradcam", "hirescam"],
        typer.Option("--cam", help="gradcam (Selvaraju 2017) or hirescam (element-wise, Draelos 2020)."),
    ] = "gradcam",
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            help="Module name(s) for Grad-CAM, a comma list is combined (each map scaled to its maximum, then "
            "averaged) [default: the last three resolution stages, e.g. backbone.layer2,backbone.layer3,"
            "backbone.layer4]. e.g. --layer backbone.layer3",
        ),
    ] = None,
    worst: Annotated[
        int | None,
        typer.Option("--worst", min=0, help="Grad-CAM only for the N lowest predicted cases. e.g. --worst 10"),
    ] = None,
    best: Annotated[
        int | None, typer.Option("--best", min=0, help="Grad-CAM (also) for the N highest predicted cases.")
    ] = None,
    slices: Annotated[
        int, typer.Option("--slices", min=1, help="Volumes: slices in the montage (most relevant first).")
    ] = 9,
    features: Annotated[
        Path | None,
        typer.Option("--features", help="Also a UMAP of this feature table from `uqseg aggregate`. e.g. "
                     "--features features.csv"),
    ] = None,
    color_by: Annotated[
        Literal["auto", "true", "predicted"],
        typer.Option("--color-by", help="UMAP colour: true, predicted or auto (true when known)."),
    ] = "auto",
    n_neighbors: Annotated[
        int, typer.Option("--n-neighbors", min=2, help="UMAP neighbours (capped at cases - 1).")
    ] = 15,
    min_dist: Annotated[float, typer.Option("--min-dist", min=0.0, help="UMAP minimum distance.")] = 0.1,
    bins: Annotated[
        Path | None,
        typer.Option(
            "--bins",
            help="Per-bin calibration sums from `uqseg evaluate` for reliability diagrams [default: "
            "metrics.bins.csv beside the input, if present]. e.g. --bins metrics.bins.csv",
        ),
    ] = None,
    uncertainty_cases: Annotated[
        int,
        typer.Option("--uncertainty-cases", min=0, help="Uncertainty-map overlays for the N lowest predicted."),
    ] = 5,
    method: Annotated[
        str | None,
        typer.Option("--method", help="Method of the uncertainty maps / scores rows [default: the model's]."),
    ] = None,
    measure: Annotated[
        str | None,
        typer.Option("--measure", help="Measure of the uncertainty overlays [default: the model's, or entropy]."),
    ] = None,
    framework: Annotated[
        str | None,
        typer.Option("--framework", help="Rows of scores.csv of this framework [default: the model's]. "
                     "e.g. --framework img-seg-unc"),
    ] = None,
    no_gradcam: Annotated[bool, typer.Option("--no-gradcam", help="Skip Grad-CAM (embedding UMAP only).")] = False,
    pdf: Annotated[bool, typer.Option("--pdf", help="Also write every figure as PDF.")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
    batch_size: BatchSize = 8,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Explain the quality predictions: Grad-CAM maps of the regressor (HDF5 + PNG overlays with the
    segmentation contour; volumes as a montage of the most relevant slices), UMAP of its penultimate embedding
    (umap.csv + PNG), predicted-vs-true and reliability plots, uncertainty overlays and a static report.html.

    Examples:
      uqseg explain -i scores.csv --model quality.pt -o explain/
      uqseg explain -i uncertainty.h5 --model quality.pt --worst 10 --direction low
      uqseg explain --features features.csv --bins metrics.bins.csv --pdf --seed 1
    """
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.explain import ExplainOptions, run

    options = ExplainOptions(
        input=input, output=output, model=model, h5=h5, features=features, bins=bins, direction=direction, cam=cam,
        layer=layer, worst=worst, best=best, slices=slices, formats=("png", "pdf") if pdf else ("png",),
        batch_size=batch_size, color_by=color_by, n_neighbors=n_neighbors, min_dist=min_dist,
        uncertainty_cases=uncertainty_cases, method=method, measure=measure, framework=framework,
        gradcam=not no_gradcam, seed=seed, overwrite=overwrite, device=device, threads=threads,
    )
    result = run(options, Report(quiet))
    if as_json and not result.interrupted:
        emit_json({**result.summary, "failed": result.failed})
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
