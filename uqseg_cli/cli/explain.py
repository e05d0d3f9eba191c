"""`uqseg explain`: Grad-CAM of the quality regressor, UMAP of its embedding, plots and an HTML report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import BatchSize, Device, JsonOut, Overwrite, Quiet, Seed, Threads, apply_threads, finish
from uqseg_cli.errors import UqsegError
from uqseg_cli.progress import log


def _find_input(path: Path | None) -> Path:
    if path is not None:
        if not Path(path).exists():
            raise UqsegError(f"{path}: input not found")
        return Path(path)
    for name in ("scores.csv", "uncertainty.h5"):
        if Path(name).exists():
            return Path(name)
    raise UqsegError("no -i given and neither scores.csv nor uncertainty.h5 is in the current folder")


def _beside(base: Path, name: str) -> Path | None:
    for p in (base.parent / name, Path(name)):
        if p.exists():
            return p
    return None


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
        str,
        typer.Option(
            "--direction",
            help="high: pixels that raise the predicted Dice (target = output); low: pixels that lower it "
            "(target = -output). e.g. --direction low",
        ),
    ] = "high",
    cam: Annotated[
        str,
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
        str, typer.Option("--color-by", help="UMAP colour: true, predicted or auto (true when known).")
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
    import pandas as pd

    from uqseg_cli.cli.common import resolve_device
    from uqseg_cli.explain.gradcam import CAM_METHODS, DIRECTIONS
    from uqseg_cli.explain.pipeline import ExplainOptions, read_scores
    from uqseg_cli.explain.pipeline import explain as run_explain
    from uqseg_cli.io.store import StageFile
    from uqseg_cli.io.tables import read_table, write_json

    if direction not in DIRECTIONS:
        raise UqsegError(f"--direction {direction!r}: choose high or low")
    if cam not in CAM_METHODS:
        raise UqsegError(f"--cam {cam!r}: choose {' or '.join(CAM_METHODS)}")
    if color_by not in ("auto", "true", "predicted"):
        raise UqsegError(f"--color-by {color_by!r}: choose auto, true or predicted")
    src = _find_input(input)
    model_path = Path(model) if model is not None else _beside(src, "quality.pt")
    if model is not None and not model_path.exists():
        raise UqsegError(f"--model {model}: quality model not found")
    qmodel, meta = None, None
    apply_threads(threads)
    dev = resolve_device(device)
    if model_path is not None:
        from uqseg_cli.quality.checkpoint import load_quality_model

        qmodel, meta = load_quality_model(model_path)
        qmodel = qmodel.to(dev)
    scores = None
    h5_path = None
    if src.suffix.lower() == ".csv":
        prefer = {k: (meta or {}).get(k) for k in ("method", "measure", "framework")}
        scores = read_scores(src, method=method, measure=measure, framework=framework, prefer=prefer)
        h5_path = Path(h5) if h5 is not None else _beside(src, "uncertainty.h5")
        if h5 is not None and not h5_path.exists():
            raise UqsegError(f"--h5 {h5}: not found")
    else:
        h5_path = src
    if qmodel is not None and h5_path is None:
        raise UqsegError(f"{src}: the model needs the cases' arrays; pass --h5 uncertainty.h5")
    bins_path = Path(bins) if bins is not None else _beside(src, "metrics.bins.csv")
    bins_df = read_table(bins_path) if bins_path is not None else None
    summ = bins_path.with_name(bins_path.name.replace(".bins.csv", ".summary.csv")) if bins_path else None
    summary_df = pd.read_csv(summ) if summ is not None and summ.exists() and summ != bins_path else None
    feat_df = read_table(features, required=["case"]) if features is not None else None
    # the report links the full tables instead of printing them
    out_dir = Path(output)
    scores_summary, links = None, []
    if src.suffix.lower() == ".csv":
        s_sum = src.with_name(f"{src.stem}.summary.csv")
        scores_summary = pd.read_csv(s_sum) if s_sum.exists() else None
        links += [(src, f"{src.name} (predicted and true {(meta or {}).get('target', 'dice')} of every case)")]
        if s_sum.exists():
            links.append((s_sum, f"{s_sum.name} (R², Pearson, Spearman, MAE, AURC of every configuration)"))
    if bins_path is not None:
        for p, what in ((summ, "every metric, per method and class"), (bins_path.with_name(
                bins_path.name.replace(".bins.csv", ".csv")), "every case, method and class")):
            if p is not None and p.exists() and p != bins_path:
                links.append((p, f"{p.name} ({what})"))
    extra_links = [(os.path.relpath(Path(p).resolve(), out_dir.resolve()), label) for p, label in links]
    opts = ExplainOptions(
        out_dir=Path(output),
        direction=direction,
        cam_method=cam,
        layer=layer,
        worst=worst,
        best=best,
        slices=slices,
        seed=seed,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        color_by=color_by,
        uncertainty_cases=uncertainty_cases,
        method=method,
        measure=measure,
        formats=("png", "pdf") if pdf else ("png",),
        batch_size=batch_size,
        device=str(dev),
        overwrite=overwrite,
        quiet=quiet,
        gradcam=not no_gradcam,
    )
    sf = StageFile(h5_path) if h5_path is not None else None
    try:
        result = run_explain(
            opts, sf=sf, sf_path=h5_path, model=qmodel, meta=meta, model_path=model_path, scores=scores,
            features=feat_df, bins=bins_df, summary_table=summary_df, scores_summary=scores_summary,
            extra_links=extra_links,
        )
    finally:
        if sf is not None:
            sf.close()
    if result.interrupted:
        from uqseg_cli import signals

        raise typer.Exit(signals.exit_code())
    log(f"wrote {len(result.files)} file(s) to {result.out_dir}; open {result.out_dir / 'report.html'}", quiet)
    if as_json:
        write_json({**result.summary, "failed": result.failed, "files": [str(p) for p in result.files]}, "-")
    finish(failed=result.failed)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
