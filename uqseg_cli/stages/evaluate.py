"""Stage ``evaluate``: multi-rater evaluation of predict.h5 / samples.h5 (consensus Dice, calibration, volume CRPS;
the CURVAS protocol) into CSV tables; the maths is :mod:`uqseg_cli.metrics.evaluation`.

Tables written: ``<output>`` (one row per case, method and class, plus a class ``all`` row; see
``metrics.evaluation.CLASS_COLUMNS``/``ALL_COLUMNS``), ``<stem>.bins.csv`` (per-bin calibration sums,
``BIN_COLUMNS``, from which shards merge into an exact dataset-level ECE) and ``<stem>.summary.csv`` (mean, std,
median and pooled value per method, class and metric). A split run writes ``<stem>.partK-of-N.csv`` (+ side
tables); ``merge_parts`` joins them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from uqseg_cli.errors import InputError, StoreError, UqsegError
from uqseg_cli.io.sharding import parse_part, part_path, resolve_part, select_part
from uqseg_cli.io.store import CaseView, StageFile
from uqseg_cli.io.tables import TableStream, check_writable, read_table, write_table
from uqseg_cli.metrics.crps import CRPS_MODES
from uqseg_cli.metrics.evaluation import (
    BIN_COLUMNS,
    CURVAS2024_BINS,
    DEFAULT_BINS,
    PROTOCOLS,
    CaseInput,
    EvalOptions,
    PooledBins,
    ScaledArray,
    evaluate_case,
    summarize,
    summary_json,
)
from uqseg_cli.progress import Progress, error
from uqseg_cli.stages.base import CaseStageOptions, Report, StageResult, option, resume_config
from uqseg_cli.stages.device import apply_threads

STAGE = "evaluate"
PARENTS = ("samples.h5", "predict.h5")  # tried in the current folder when no input is given
DETERMINISTIC = "deterministic"


@dataclass(kw_only=True)
class EvaluateOptions(CaseStageOptions):
    """Options of ``evaluate``; ``output`` ``-`` is standard output. ``bins`` and ``crps`` are resolved from the
    protocol when not given (``bins`` None → 15, 50 in curvas2024; ``crps`` empty → gaussian, curvas in
    curvas2024); ``methods`` empty = every method the file holds."""

    output: Path = Path("metrics.csv")
    methods: list[str] = option(factory=list)
    protocol: str = option("uqseg", config=True)
    bins: int | None = option(None, config="n_bins")
    crps: list[str] = option(factory=list, config=True)
    bins_out: Path | None = None  # None: <output stem>.bins.csv
    summary_out: Path | None = None  # None: <output stem>.summary.csv
    merge_parts: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.protocol not in PROTOCOLS:
            raise UqsegError(f"--protocol {self.protocol!r}: choose from {', '.join(PROTOCOLS)}")
        curvas = self.protocol == "curvas2024"
        modes = list(self.crps) or (["curvas"] if curvas else ["gaussian"])
        bad = [m for m in modes if m not in CRPS_MODES]
        if bad:
            raise UqsegError(f"--crps {','.join(bad)}: choose from {', '.join(CRPS_MODES)}")
        self.crps = list(dict.fromkeys(modes))
        if curvas and self.bins is not None and self.bins != CURVAS2024_BINS:
            raise UqsegError(f"--bins {self.bins} conflicts with --protocol curvas2024 (which uses {CURVAS2024_BINS} "
                             "bins)")
        self.bins = self.bins if self.bins is not None else (CURVAS2024_BINS if curvas else DEFAULT_BINS)
        for name in ("bins_out", "summary_out"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))

    @property
    def to_stdout(self) -> bool:
        return str(self.output) == "-"

    def eval_options(self) -> EvalOptions:
        return EvalOptions(n_bins=self.bins, crps_modes=tuple(self.crps), protocol=self.protocol)


def side_paths(out: Path) -> tuple[Path, Path]:
    """``metrics.csv`` -> (``metrics.bins.csv``, ``metrics.summary.csv``), part suffix kept."""
    out = Path(out)
    return out.with_name(f"{out.stem}.bins.csv"), out.with_name(f"{out.stem}.summary.csv")


def default_input(path: Path | None, report: Report) -> Path:
    """The given input, else ./samples.h5, else ./predict.h5."""
    if path is not None:
        if not Path(path).exists():
            raise UqsegError(f"{path}: input not found")
        return Path(path)
    for name in PARENTS:
        if Path(name).exists():
            report.log(f"reading {name} (no -i given)")
            return Path(name)
    raise UqsegError("no -i given and neither samples.h5 nor predict.h5 is in the current folder")


def class_names(sf: StageFile, k: int) -> list[str]:
    """The class names of the lineage's config when there are ``k`` of them, else background, class1, ..."""
    names = None
    for anc in sf.lineage():
        names = anc.config.get("class_names") or names
    if names and len(names) == k:
        return [str(n) for n in names]
    return ["background"] + [f"class{i}" for i in range(1, k)]


def _methods(cv: CaseView) -> list[str]:
    return [m for m in cv.keys() if cv.has(f"{m}/sum_p")]


def resolve_methods(sf: StageFile, src: Path, first: CaseView, options: EvaluateOptions) -> list[str]:
    """``deterministic`` for a predict file; else the asked methods of samples.h5 (all it holds by default)."""
    if sf.stage == "predict":
        if options.methods and options.methods != [DETERMINISTIC]:
            raise UqsegError(f"--method: {src} is a predict file (one deterministic prediction); "
                             "methods apply to samples.h5")
        if "ensemble" in options.crps:
            raise UqsegError(f"--crps ensemble needs sampled volumes: pass samples.h5, not {src}")
        return [DETERMINISTIC]
    present = _methods(first)
    methods = list(options.methods) or present
    missing = [m for m in methods if m not in present]
    if missing:
        raise UqsegError(f"--method {','.join(missing)}: not in {src} (it has {', '.join(present) or 'none'})")
    return methods


def load_case(sf: StageFile, cv: CaseView, method: str, need_image: bool, need_volumes: bool) -> CaseInput:
    """One case and method as :func:`evaluate_case` reads it (arrays stay h5py datasets: read slab by slab)."""
    where = f"{sf.path}: case {cv.id}"
    if not cv.has("raters"):
        raise InputError(f"{where}: no rater masks (run `uqseg predict --raters ...` to ingest them)")
    if method == DETERMINISTIC:
        probs = cv.dataset("probabilities")
        seg = cv.dataset("segmentation") if cv.has("segmentation") else None
        volumes = None
    else:
        ds = cv.dataset(f"{method}/sum_p")
        t = ds.parent.attrs.get("T")
        if t is None or int(t) < 1:
            raise InputError(f"{where}: method {method} has no valid attribute T")
        probs = ScaledArray(ds, int(t))
        seg = None  # argmax of the mean prediction
        volumes = cv.get(f"{method}/volumes") if cv.has(f"{method}/volumes") else None
        if need_volumes and volumes is None:
            raise InputError(f"{where}: method {method} has no per-sample volumes for --crps ensemble")
    image = cv.dataset("image") if need_image else None
    return CaseInput(
        case_id=cv.id,
        method=method,
        probabilities=probs,
        raters=cv.dataset("raters"),
        spacing=cv.spacing,
        segmentation=seg,
        image=image,
        sample_volumes=volumes,
    )


def evaluate_one(sf: StageFile, src: Path, case_id: str, methods: list[str], names: list[str],
                 options: EvaluateOptions) -> tuple[list[dict], list[dict], str | None]:
    """Rows and per-bin rows of one case, method after method, and the error that stopped it (None: all done);
    the rows of the methods before a failing one are kept."""
    cv = sf.case(case_id)
    rows: list[dict] = []
    bin_rows: list[dict] = []
    for m in methods:
        try:
            inp = load_case(sf, cv, m, options.protocol == "curvas2024", "ensemble" in options.crps)
            r, b = evaluate_case(inp, names, options.eval_options())
        except (InputError, StoreError, ValueError) as exc:
            msg = str(exc)
            return rows, bin_rows, msg if str(src) in msg else f"{src}: {msg}"
        rows.extend(r)
        bin_rows.extend(b)
    return rows, bin_rows, None


def merge_parts(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join ``<stem>.partK-of-N.csv`` (+ bins) files; refuses missing parts and overlapping cases."""
    found = sorted(out.parent.glob(f"{out.stem}.part*-of-*{out.suffix}"))
    parts = [(p, pp) for p in found if (pp := parse_part(p)) is not None and pp[0] == out.stem]
    if not parts:
        raise UqsegError(f"no part files found for {out} (expected {part_path(out, 2, 0).name} and so on)")
    ns = {pp[2] for _, pp in parts}
    if len(ns) != 1:
        raise UqsegError(f"{out}: part files from different splits ({', '.join(f'of-{n}' for n in sorted(ns))})")
    n = ns.pop()
    have = sorted(pp[1] for _, pp in parts)
    if have != list(range(n)):
        missing = sorted(set(range(n)) - set(have))
        raise UqsegError(f"{out}: part(s) {', '.join(map(str, missing))} of {n} missing")
    rows, bins = [], []
    seen: dict[str, Path] = {}
    for p, _ in parts:
        df = read_table(p, required=["case", "method", "class"])
        bpath = side_paths(p)[0]
        if not bpath.exists():
            raise UqsegError(f"{bpath}: missing (needed for the pooled calibration of {p.name})")
        for cid in df["case"].astype(str).unique():
            if cid in seen:
                raise UqsegError(f"case {cid} appears in both {seen[cid].name} and {p.name}")
            seen[cid] = p
        rows.append(df)
        bins.append(read_table(bpath, required=BIN_COLUMNS))
    return pd.concat(rows, ignore_index=True), pd.concat(bins, ignore_index=True)


def _class_key(s: pd.Series) -> pd.Series:
    # the "all" row (class_index -1) after the class rows of its case
    return s.where(s != -1, 10**9) if s.name == "class_index" else s


def write_tables(df: pd.DataFrame, bdf: pd.DataFrame, out: Path, b_path: Path | None, s_path: Path | None,
                 overwrite: bool, report: Report, failed: dict[str, str], extra: dict | None = None,
                 bins_stream: TableStream | None = None) -> StageResult:
    """Sort the rows, summarise them and write the three tables; the result's ``summary`` is the ``--json``
    document (``extra`` first). ``bdf`` is the per-bin table, or only its sums per bin (``PooledBins.frame``)
    when ``bins_stream`` holds the table, written case by case; it is committed after ``out``."""
    if not overwrite:
        for p in (out, b_path, s_path):
            if p is not None:
                check_writable(p, overwrite)
    if not df.empty:
        df["case"] = df["case"].astype(str)
        df = df.sort_values(["method", "case", "class_index"], key=_class_key).reset_index(drop=True)
    summary = summarize(df, bdf) if not df.empty else pd.DataFrame()
    write_table(df, out)
    if bins_stream is not None:
        bins_stream.commit()
    elif b_path is not None:
        write_table(bdf, b_path)
    if s_path is not None:
        write_table(summary, s_path)
    cases = sorted(df["case"].unique()) if not df.empty else []
    doc = {**(extra or {}), "cases": len(cases), "failed": failed, "output": str(out),
           "bins": str(b_path) if b_path else None, "summary": summary_json(summary) if not summary.empty else {}}
    report.log(f"evaluated {len(cases)} case(s) -> {out}" + (f" (+ {b_path}, {s_path})" if b_path else ""))
    return StageResult(out=out, done=[c for c in cases if c not in failed], failed=dict(failed), summary=doc)


def run_merge(options: EvaluateOptions, report: Report) -> StageResult:
    """``merge_parts``: join the part tables next to ``options.output`` into it, with the exact pooled
    calibration."""
    if options.to_stdout:
        raise UqsegError("--merge-parts needs a file -o (the parts are found next to it)")
    rows, bins_df = merge_parts(options.output)
    db, ds = side_paths(options.output)
    return write_tables(rows, bins_df, options.output, options.bins_out or db, options.summary_out or ds,
                        options.overwrite, report, {})


def run(options: EvaluateOptions, report: Report | None = None) -> StageResult:
    """Evaluate every case (of this part) of ``options.input`` (predict.h5 or samples.h5) against its raters."""
    report = report or Report()
    apply_threads(options.threads, torch_too=False)
    if options.merge_parts:
        return run_merge(options, report)
    n_parts, part = resolve_part(options.num_parts, options.part_id)
    src = default_input(options.input, report)
    out = options.output if options.to_stdout else part_path(options.output, n_parts, part)
    b_path, s_path = options.bins_out, options.summary_out
    if not options.to_stdout:
        db, ds = side_paths(out)
        b_path, s_path = b_path or db, s_path or ds
    for p in (out, b_path, s_path):
        if p is not None:
            check_writable(p, options.overwrite)

    with StageFile(src, expect_stage=("predict", "sample")) as sf:
        all_ids = sf.case_ids
        if not all_ids:
            raise InputError(f"{src}: holds no complete case")
        ids = select_part(all_ids, n_parts, part)
        first = sf.case(all_ids[0])
        if not any(sf.case(c).has("raters") for c in all_ids):
            raise InputError(f"{src}: no case has rater masks (run `uqseg predict --raters DIR ...` first)")
        methods = resolve_methods(sf, src, first, options)
        names = class_names(sf, first.dataset("probabilities").shape[0])
        rows: list[dict] = []
        # per-bin rows are most of the output (cases x raters x bins: 240,000 rows at 2,000 ISIC cases): each
        # case's go straight to the (temporary) bins table, and only their sums per bin stay for the summary
        pool = PooledBins()
        bins = TableStream(b_path, BIN_COLUMNS) if b_path is not None else None
        failed: dict[str, str] = {}
        prog = Progress(len(ids), "evaluate", quiet=report.quiet)
        try:
            for cid in ids:
                r, b, why = evaluate_one(sf, src, cid, methods, names, options)
                rows.extend(r)
                pool.add(b)
                if bins is not None and b:
                    bins.write(pd.DataFrame([tuple(d.get(c, np.nan) for c in BIN_COLUMNS) for d in b],
                                            columns=BIN_COLUMNS))
                if why is not None:
                    failed[cid] = why
                prog.advance(cid, "ok" if why is None else "failed")
        except BaseException:
            if bins is not None:
                bins.abort()
            raise
        finally:
            prog.close()
    for msg in failed.values():
        error(msg)
    extra = {"input": str(src), **resume_config(options), "part": [part, n_parts]}
    try:
        return write_tables(pd.DataFrame(rows), pool.frame(), out, b_path, s_path, True, report, failed, extra,
                            bins_stream=bins)
    finally:
        if bins is not None:
            bins.abort()  # a no-op once committed
