"""Stage ``aggregate``: uncertainty maps → per-case scalar features (+ combined score, + correlation report).

Tables written (CSV, not HDF5; ``-`` as the output writes the feature table to standard output):
see :data:`TABLES`. Nothing is resumed: a rerun recomputes every table (``--overwrite`` to replace them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.store import StageFile
from uqseg_cli.io.tables import check_writable, write_table
from uqseg_cli.progress import Progress, error, warn
from uqseg_cli.quality.combined import CombinedStats, add_combined
from uqseg_cli.quality.correlation import correlation_table, wide_table
from uqseg_cli.quality.regions import LONG_COLUMNS, REGIONS, Collected, RegionParams, available_maps, collect_features
from uqseg_cli.stages.base import Report, StageResult, input_or_default, option
from uqseg_cli.stages.device import apply_threads

STAGE = "aggregate"
PARENT = ("uncertainty", "uncertainty.h5", "uncertainty file")  # the stage it reads, its default file name, what
TABLES = {
    "<output>": "CSV case,method,measure,region,value (--wide: one row per case, one column per "
    "method.measure.region)",
    "<output stem>.stats.json": "z-score statistics and weights of the combined score (or --stats-out)",
    "<correlate>": "CSV: Pearson/Spearman of every feature with dice, iou and hd95 (--correlate only)",
}
WEIGHTS = ("equal", "learned")
NO_COMBINED = ["none"]  # --combine none


@dataclass(kw_only=True)
class AggregateOptions:
    """Options of ``aggregate``; ``methods``/``measures`` empty = all the file holds, ``combine`` empty = every
    measure read (``["none"]``: no combined score)."""

    input: Path | None = None  # None: ./uncertainty.h5
    output: str = "features.csv"  # "-": standard output
    methods: list[str] = option(factory=list, config=True)
    measures: list[str] = option(factory=list, config=True)
    band_width: int = option(3, config=True)
    patch_size: int = option(32, config=True)
    quantile: float = option(0.9, config=True)
    wide: bool = option(False, config=True)
    combine: list[str] = option(factory=list, config=True)
    combine_region: str = option("foreground", config=True)
    weights: str = option("equal", config=True)
    alpha: float = option(1.0, config=True)
    reference: Path | None = option(None, config=True)  # saved statistics and weights of an earlier run
    stats_out: Path | None = None  # None: <output stem>.stats.json (none with -o -)
    correlate: Path | None = None
    overwrite: bool = False
    device: str = "auto"  # accepted like on every stage; aggregate computes with NumPy on the CPU
    threads: int = 0

    def __post_init__(self) -> None:
        self.output = str(self.output)
        for name in ("input", "reference", "stats_out", "correlate"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        for name, value in (("--band-width", self.band_width), ("--patch-size", self.patch_size)):
            if value < 1:
                raise UqsegError(f"{name} {value}: must be at least 1")
        if not 0.0 <= self.quantile <= 0.999:
            raise UqsegError(f"--quantile {self.quantile}: must be in [0, 0.999]")
        if self.alpha < 0:
            raise UqsegError(f"--alpha {self.alpha}: must be at least 0")
        if self.combine_region not in REGIONS:
            raise UqsegError(f"--combine-region {self.combine_region!r}: choose from {', '.join(REGIONS)}")
        if self.weights not in WEIGHTS:
            raise UqsegError(f"--weights {self.weights!r}: choose equal or learned")
        if self.reference is not None and self.weights == "learned":
            raise UqsegError("--reference reuses saved weights; it cannot be combined with --weights learned")

    @property
    def params(self) -> RegionParams:
        return RegionParams(band_width=self.band_width, patch_size=self.patch_size, quantile=self.quantile)

    @property
    def stats_path(self) -> Path | None:
        """Where the combined-score statistics go: --stats-out, else ``<output stem>.stats.json`` (none with -)."""
        return self.stats_out if self.stats_out is not None else stats_path_for(self.output)


def stats_path_for(output: str) -> Path | None:
    return None if output == "-" else Path(output).with_name(f"{Path(output).stem}.stats.json")


def pick_methods_measures(sf: StageFile, methods: list[str] | None, measures: list[str] | None):
    """``(case ids, methods, measures)`` to read (empty or None: all), checked against the first case of the file
    (one clear error otherwise). Also used by ``score``."""
    ids = sf.case_ids
    if not ids:
        raise InputError(f"{sf.path}: holds no complete case")
    first = sf.case(ids[0])
    present = first.keys()
    methods = list(methods or []) or present
    missing = [m for m in methods if m not in present]
    if missing:
        raise UqsegError(f"--method {','.join(missing)}: not in {sf.path} (it has {', '.join(present) or 'none'})")
    maps = available_maps(first, methods[0])
    measures = list(measures or []) or maps
    missing = [m for m in measures if m not in maps]
    if missing:
        raise UqsegError(f"--measure {','.join(missing)}: not in {sf.path} (it has {', '.join(maps)})")
    return ids, methods, measures


def load_reference(path: Path | None) -> CombinedStats | None:
    """The saved statistics of ``--reference`` (None without it); one line for a missing or foreign file."""
    if path is None:
        return None
    try:
        return CombinedStats.load(path)
    except FileNotFoundError:
        raise UqsegError(f"{path}: statistics file not found") from None
    except (ValueError, KeyError) as exc:
        raise UqsegError(f"{path}: not a combined-score statistics file ({exc})") from None


def read_features(sf: StageFile, ids: list[str], methods: list[str], measures: list[str],
                  options: AggregateOptions, report: Report) -> Collected:
    """The feature rows of every case (and its Dice, IoU, HD95 where the correlations or learned weights need
    them); a case that cannot be read is reported on stderr and left out."""
    prog = Progress(len(ids), STAGE, quiet=report.quiet)
    try:
        got = collect_features(
            sf, ids, methods, measures, options.params, progress=prog,
            with_quality=options.weights == "learned" or options.correlate is not None,
            with_hd95=options.correlate is not None,
        )
    finally:
        prog.close()
    for msg in got.failed.values():
        error(msg)
    return got


def with_combined_score(long: pd.DataFrame, got: Collected, measures: list[str], ref_stats: CombinedStats | None,
                        options: AggregateOptions, src: Path, report: Report) -> pd.DataFrame:
    """``long`` with the rows of the combined score (fitted here, or on the scale of ``--reference``); the fitted
    statistics are saved to :attr:`AggregateOptions.stats_path`."""
    combo = options.combine
    region = options.combine_region
    if ref_stats is not None:
        feats = list(ref_stats.features)
        if combo and [f"{m}/{region}" for m in combo] != feats:
            warn(f"--combine ignored: {options.reference} fixes the combined features ({', '.join(feats)})")
        region_label = feats[0].split("/", 1)[1] if len(feats) else region
    else:
        combo = combo or list(measures)
        bad = [m for m in combo if m not in measures]
        if bad:
            raise UqsegError(f"--combine {','.join(bad)}: not among the measures read ({', '.join(measures)})")
        feats = [f"{m}/{region}" for m in combo]
        region_label = region
    if options.weights == "learned" and got.quality.empty:
        raise InputError(f"{src}: --weights learned needs reference masks, and no case has one")
    dice = dict(zip(got.quality["case"], got.quality["dice"], strict=True))
    try:
        long, stats = add_combined(long, feats, region_label, ref_stats, dice, options.weights, options.alpha)
    except (KeyError, ValueError) as exc:
        raise UqsegError(f"combined score: {exc.args[0] if exc.args else exc}") from None
    s_path = options.stats_path
    if ref_stats is None and s_path is not None:
        stats.save(s_path)
        report.log(f"combined-score statistics ({options.weights} weights) -> {s_path}")
    elif ref_stats is None:
        report.log("combined-score statistics not saved (-o -; pass --stats-out to keep them)")
    return long


def write_correlations(long: pd.DataFrame, quality: pd.DataFrame, options: AggregateOptions, src: Path,
                       report: Report) -> None:
    """``--correlate``: every feature against Dice, IoU and HD95 over the cases with a reference."""
    if quality.empty:
        warn(f"--correlate: no case of {src} has a reference mask; no correlation table written")
        return
    write_table(correlation_table(long, quality), options.correlate)
    report.log(f"correlations with Dice, IoU and HD95 over {len(quality)} case(s) -> {options.correlate}")


def run(options: AggregateOptions, report: Report | None = None) -> StageResult:
    """Aggregate every case of ``options.input`` (an uncertainty.h5) into the feature table ``options.output``."""
    report = report or Report()
    apply_threads(options.threads, torch_too=False)
    src = input_or_default(options.input, *PARENT[1:])
    s_path = options.stats_path
    for p in (options.output, s_path, options.correlate):
        if p is not None:
            check_writable(p, options.overwrite)
    ref_stats = load_reference(options.reference)

    with StageFile(src, expect_stage=PARENT[0]) as sf:
        ids, methods, measures = pick_methods_measures(sf, options.methods, options.measures)
        got = read_features(sf, ids, methods, measures, options, report)
    if got.long.empty:
        raise InputError(f"{src}: no case could be aggregated")
    long = got.long
    if options.combine != NO_COMBINED:
        long = with_combined_score(long, got, measures, ref_stats, options, src, report)

    long = long.sort_values(["case", "method", "measure", "region"], kind="mergesort").reset_index(drop=True)
    table = wide_table(long) if options.wide else long[LONG_COLUMNS]
    write_table(table, options.output)
    cases = list(dict.fromkeys(long["case"]))
    report.log(f"aggregated {len(cases)} case(s) x {len(methods)} method(s) -> {options.output}")
    if options.correlate is not None:
        write_correlations(long, got.quality, options, src, report)
    summary = {
        "input": str(src), "output": str(options.output), "cases": len(cases), "methods": methods,
        "measures": measures, "rows": int(len(table)),
        "correlations": str(options.correlate) if options.correlate else None,
        "stats": str(s_path) if s_path is not None and s_path.exists() else None, "failed": got.failed,
    }
    return StageResult(out=Path(options.output), done=cases, failed=dict(got.failed), summary=summary)
