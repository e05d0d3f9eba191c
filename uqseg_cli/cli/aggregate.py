"""`uqseg aggregate`: uncertainty maps → per-case scalar features (+ combined score, + correlation report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import (
    CpuDevice,
    JsonOut,
    Overwrite,
    Quiet,
    Threads,
    apply_threads,
    cpu_stage_device,
    default_input,
    emit_json,
    finish,
)
from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.store import StageFile
from uqseg_cli.io.tables import check_writable, write_table
from uqseg_cli.parsing import split_list
from uqseg_cli.progress import Progress, log, warn
from uqseg_cli.quality.combined import CombinedStats, add_combined
from uqseg_cli.quality.correlation import correlation_table, wide_table
from uqseg_cli.quality.regions import LONG_COLUMNS, REGIONS, RegionParams, available_maps, collect_features


def stats_path_for(output: str) -> Path | None:
    return None if output == "-" else Path(output).with_name(f"{Path(output).stem}.stats.json")


def pick_methods_measures(sf: StageFile, method: list[str] | None, measure: list[str] | None):
    """Methods and measures to read, checked against the first case of the file (one clear error otherwise)."""
    ids = sf.case_ids
    if not ids:
        raise InputError(f"{sf.path}: holds no complete case")
    first = sf.case(ids[0])
    present = first.keys()
    methods = split_list(method) or present
    missing = [m for m in methods if m not in present]
    if missing:
        raise UqsegError(f"--method {','.join(missing)}: not in {sf.path} (it has {', '.join(present) or 'none'})")
    maps = available_maps(first, methods[0])
    measures = split_list(measure) or maps
    missing = [m for m in measures if m not in maps]
    if missing:
        raise UqsegError(f"--measure {','.join(missing)}: not in {sf.path} (it has {', '.join(maps)})")
    return ids, methods, measures


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
        typer.Option("--method", help="Methods to read (repeat or comma list), e.g. tta (default: all)."),
    ] = None,
    measure: Annotated[
        list[str] | None,
        typer.Option("--measure", help="Measures to read (repeat or comma list), e.g. entropy (default: all)."),
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
        str, typer.Option("--combine-region", help=f"Region of the combined features: {', '.join(REGIONS)}.")
    ] = "foreground",
    weights: Annotated[
        str,
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
    """Condense uncertainty maps into per-case scores (regions, volumes, a combined score).

    Per case, method and measure: mean over the whole image, the predicted foreground, a band around the predicted
    boundary, the max of sliding-window means, and the mean above a quantile; per case and method: the predicted
    volume (ml) and the spread (std, CV) of the sampled volumes; per case and method the combined score (z-scored
    measures, averaged). Long CSV columns: case,method,measure,region,value.

    Examples:
      uqseg aggregate                                   # uncertainty.h5 -> features.csv (+ features.stats.json)
      uqseg aggregate -i new/uncertainty.h5 -o new/features.csv --reference features.stats.json
      uqseg aggregate --method tta --wide -o - | head
      uqseg aggregate --weights learned --correlate correlations.csv
    """
    cpu_stage_device(device, "aggregate", quiet)
    apply_threads(threads, torch_too=False)
    if as_json and output == "-":
        raise UqsegError("--json and -o - both write to standard output; pick one")
    if combine_region not in REGIONS:
        raise UqsegError(f"--combine-region {combine_region!r}: choose from {', '.join(REGIONS)}")
    if weights not in ("equal", "learned"):
        raise UqsegError(f"--weights {weights!r}: choose equal or learned")
    if reference is not None and weights == "learned":
        raise UqsegError("--reference reuses saved weights; it cannot be combined with --weights learned")
    params = RegionParams(band_width=band_width, patch_size=patch_size, quantile=quantile)
    src = default_input(input, "uncertainty.h5", "uncertainty file")
    s_path = stats_out if stats_out is not None else stats_path_for(output)
    for p in (output, s_path, correlate):
        if p is not None:
            check_writable(p, overwrite)
    ref_stats = None
    if reference is not None:
        try:
            ref_stats = CombinedStats.load(reference)
        except FileNotFoundError:
            raise UqsegError(f"{reference}: statistics file not found") from None
        except (ValueError, KeyError) as exc:
            raise UqsegError(f"{reference}: not a combined-score statistics file ({exc})") from None

    with StageFile(src, expect_stage="uncertainty") as sf:
        ids, methods, measures = pick_methods_measures(sf, method, measure)
        need_quality = weights == "learned" or correlate is not None
        prog = Progress(len(ids), "aggregate", quiet=quiet)
        try:
            got = collect_features(
                sf, ids, methods, measures, params, with_quality=need_quality, progress=prog,
                with_hd95=correlate is not None,
            )
        finally:
            prog.close()
    for msg in got.failed.values():
        typer.echo(f"uqseg: error: {msg}", err=True)
    if got.long.empty:
        raise InputError(f"{src}: no case could be aggregated")
    long = got.long

    combo = split_list(combine)
    if combo != ["none"]:
        if ref_stats is not None:
            feats = list(ref_stats.features)
            if combo and [f"{m}/{combine_region}" for m in combo] != feats:
                warn(f"--combine ignored: {reference} fixes the combined features ({', '.join(feats)})")
            region_label = feats[0].split("/", 1)[1] if len(feats) else combine_region
        else:
            combo = combo or list(measures)
            bad = [m for m in combo if m not in measures]
            if bad:
                raise UqsegError(f"--combine {','.join(bad)}: not among the measures read ({', '.join(measures)})")
            feats = [f"{m}/{combine_region}" for m in combo]
            region_label = combine_region
        if weights == "learned" and got.quality.empty:
            raise InputError(f"{src}: --weights learned needs reference masks, and no case has one")
        dice = dict(zip(got.quality["case"], got.quality["dice"], strict=True))
        try:
            long, stats = add_combined(long, feats, region_label, ref_stats, dice, weights, alpha)
        except (KeyError, ValueError) as exc:
            raise UqsegError(f"combined score: {exc.args[0] if exc.args else exc}") from None
        if ref_stats is None and s_path is not None:
            stats.save(s_path)
            log(f"combined-score statistics ({weights} weights) -> {s_path}", quiet)
        elif ref_stats is None:
            log("combined-score statistics not saved (-o -; pass --stats-out to keep them)", quiet)

    long = long.sort_values(["case", "method", "measure", "region"], kind="mergesort").reset_index(drop=True)
    table = wide_table(long) if wide else long[LONG_COLUMNS]
    write_table(table, output)
    log(f"aggregated {long['case'].nunique()} case(s) x {len(methods)} method(s) -> {output}", quiet)

    if correlate is not None:
        if got.quality.empty:
            warn(f"--correlate: no case of {src} has a reference mask; no correlation table written")
        else:
            write_table(correlation_table(long, got.quality), correlate)
            log(f"correlations with Dice, IoU and HD95 over {len(got.quality)} case(s) -> {correlate}", quiet)
    if as_json:

        doc = {"input": str(src), "output": str(output), "cases": int(long["case"].nunique()), "methods": methods,
               "measures": measures, "rows": int(len(table)), "correlations": str(correlate) if correlate else None,
               "stats": str(s_path) if s_path is not None and s_path.exists() else None, "failed": got.failed}
        emit_json(doc)
    finish(failed=got.failed)


def register(app: typer.Typer) -> None:
    app.command("aggregate")(aggregate)

