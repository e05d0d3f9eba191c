"""`uqseg evaluate`: multi-rater evaluation (consensus Dice, calibration, volume CRPS; the CURVAS protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from uqseg_cli.cli.common import (
    CpuDevice,
    JsonOut,
    NumParts,
    Overwrite,
    PartId,
    Quiet,
    Threads,
    apply_threads,
    cpu_stage_device,
    emit_json,
    finish,
)
from uqseg_cli.errors import InputError, StoreError, UqsegError
from uqseg_cli.io.sharding import parse_part, part_path, resolve_part, select_part
from uqseg_cli.io.store import CaseView, StageFile
from uqseg_cli.io.tables import check_writable, read_table, write_table
from uqseg_cli.metrics.crps import CRPS_MODES
from uqseg_cli.metrics.evaluation import (
    BIN_COLUMNS,
    CURVAS2024_BINS,
    DEFAULT_BINS,
    PROTOCOLS,
    CaseInput,
    EvalOptions,
    ScaledArray,
    evaluate_case,
    summarize,
    summary_json,
)
from uqseg_cli.parsing import split_list
from uqseg_cli.progress import Progress, log

DETERMINISTIC = "deterministic"


def side_paths(out: Path) -> tuple[Path, Path]:
    """``metrics.csv`` -> (``metrics.bins.csv``, ``metrics.summary.csv``), part suffix kept."""
    out = Path(out)
    return out.with_name(f"{out.stem}.bins.csv"), out.with_name(f"{out.stem}.summary.csv")


def _class_names(sf: StageFile, k: int) -> list[str]:
    names = None
    for anc in sf.lineage():
        names = anc.config.get("class_names") or names
    if names and len(names) == k:
        return [str(n) for n in names]
    return ["background"] + [f"class{i}" for i in range(1, k)]


def _methods(cv: CaseView) -> list[str]:
    return [m for m in cv.keys() if cv.has(f"{m}/sum_p")]


def _load(sf: StageFile, cv: CaseView, method: str, need_image: bool, need_volumes: bool) -> CaseInput:
    where = f"{sf.path}: case {cv.id}"
    if not cv.has("raters"):
        raise InputError(f"{where}: no rater masks (run `uqseg predict --raters ...` to ingest them)")
    # probabilities, segmentation and raters stay h5py datasets: evaluate_case reads them slab by slab
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
            help="Volume CRPS mode(s): gaussian (closed form), curvas (challenge code, truncated to mu+-3sigma), "
            "ensemble (T sampled volumes; samples.h5). Repeat or comma list. (default: gaussian; curvas in "
            "curvas2024)",
        ),
    ] = None,
    protocol: Annotated[
        str,
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
    """Evaluate predictions against several raters (the CURVAS protocol).

    Per case and class: consensus/dissensus, Dice against the consensus (dissensus removed), each rater, the
    majority vote and the mean rater mask; the CURVAS confidence; ECE (top-label, class-wise, foreground), MCE,
    ACE, Brier and NLL against each rater (averaged); volumes (ml) and volume CRPS. Per-bin calibration sums go to
    <stem>.bins.csv so shards merge into an exact dataset-level ECE; the summary to <stem>.summary.csv.

    Examples:
      uqseg evaluate -i predict.h5 -o metrics.csv
      uqseg evaluate -i samples.h5 --method tta --crps gaussian,ensemble --json
      uqseg evaluate -i predict.h5 --protocol curvas2024 -o curvas.csv
      uqseg evaluate -i predict.h5 --num-parts 4 --part-id 0   # then: uqseg evaluate --merge-parts
    """
    cpu_stage_device(device, "evaluate", quiet)
    apply_threads(threads, torch_too=False)
    if protocol not in PROTOCOLS:
        raise UqsegError(f"--protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    modes = split_list(crps) or (["curvas"] if protocol == "curvas2024" else ["gaussian"])
    bad = [m for m in modes if m not in CRPS_MODES]
    if bad:
        raise UqsegError(f"--crps {','.join(bad)}: choose from {', '.join(CRPS_MODES)}")
    modes = list(dict.fromkeys(modes))
    if protocol == "curvas2024" and bins is not None and bins != CURVAS2024_BINS:
        raise UqsegError(f"--bins {bins} conflicts with --protocol curvas2024 (which uses {CURVAS2024_BINS} bins)")
    n_bins = bins if bins is not None else (CURVAS2024_BINS if protocol == "curvas2024" else DEFAULT_BINS)
    if as_json and output == "-":
        raise UqsegError("--json and -o - both write to standard output; pick one")
    opts = EvalOptions(n_bins=n_bins, crps_modes=tuple(modes), protocol=protocol)

    if merge_parts:
        if output == "-":
            raise UqsegError("--merge-parts needs a file -o (the parts are found next to it)")
        rows, bins_df, failed = _merge(Path(output))
        db, ds = side_paths(Path(output))
        _write(rows, bins_df, Path(output), bins_out or db, summary_out or ds, overwrite, as_json, quiet, failed)
        return

    n_parts, part = resolve_part(num_parts, part_id)
    src = _default_input(input, quiet)
    out_path = output if output == "-" else str(part_path(Path(output), n_parts, part))
    b_path, s_path = (bins_out, summary_out)
    if output != "-":
        db, ds = side_paths(Path(out_path))
        b_path = b_path or db
        s_path = s_path or ds
    for p in (out_path, b_path, s_path):
        if p is not None:
            check_writable(p, overwrite)

    with StageFile(src, expect_stage=("predict", "sample")) as sf:
        all_ids = sf.case_ids
        if not all_ids:
            raise InputError(f"{src}: holds no complete case")
        ids = select_part(all_ids, n_parts, part)
        first = sf.case(all_ids[0])
        if not any(sf.case(c).has("raters") for c in all_ids):
            raise InputError(f"{src}: no case has rater masks (run `uqseg predict --raters DIR ...` first)")
        if sf.stage == "predict":
            if split_list(method) and split_list(method) != [DETERMINISTIC]:
                raise UqsegError(f"--method: {src} is a predict file (one deterministic prediction); "
                                 "methods apply to samples.h5")
            if "ensemble" in modes:
                raise UqsegError(f"--crps ensemble needs sampled volumes: pass samples.h5, not {src}")
            methods = [DETERMINISTIC]
        else:
            present = _methods(first)
            methods = split_list(method) or present
            missing = [m for m in methods if m not in present]
            if missing:
                raise UqsegError(f"--method {','.join(missing)}: not in {src} (it has {', '.join(present) or 'none'})")
        k = first.dataset("probabilities").shape[0]
        names = _class_names(sf, k)
        rows: list[dict] = []
        bin_rows: list[dict] = []
        failed: dict[str, str] = {}
        prog = Progress(len(ids), "evaluate", quiet=quiet)
        try:
            for cid in ids:
                cv = sf.case(cid)
                status = "ok"
                for m in methods:
                    try:
                        inp = _load(sf, cv, m, protocol == "curvas2024", "ensemble" in modes)
                        r, b = evaluate_case(inp, names, opts)
                    except (InputError, StoreError, ValueError) as exc:
                        msg = str(exc)
                        failed[cid] = msg if str(src) in msg else f"{src}: {msg}"
                        status = "failed"
                        break
                    rows.extend(r)
                    bin_rows.extend(b)
                prog.advance(cid, status)
        finally:
            prog.close()
    for msg in failed.values():
        typer.echo(f"uqseg: error: {msg}", err=True)
    df = pd.DataFrame(rows)
    bdf = pd.DataFrame(bin_rows, columns=BIN_COLUMNS)
    _write(df, bdf, out_path, b_path, s_path, True, as_json, quiet, failed,
           extra={"input": str(src), "protocol": protocol, "n_bins": n_bins, "crps": modes, "part": [part, n_parts]})


def _default_input(path: Path | None, quiet: bool) -> Path:
    if path is not None:
        if not Path(path).exists():
            raise UqsegError(f"{path}: input not found")
        return Path(path)
    for name in ("samples.h5", "predict.h5"):
        if Path(name).exists():
            log(f"reading {name} (no -i given)", quiet)
            return Path(name)
    raise UqsegError("no -i given and neither samples.h5 nor predict.h5 is in the current folder")


def _merge(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
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
    return pd.concat(rows, ignore_index=True), pd.concat(bins, ignore_index=True), {}


def _write(
    df: pd.DataFrame,
    bdf: pd.DataFrame,
    out: str | Path,
    b_path: Path | None,
    s_path: Path | None,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
    failed: dict[str, str],
    extra: dict | None = None,
) -> None:
    if not overwrite:
        for p in (out, b_path, s_path):
            if p is not None:
                check_writable(p, overwrite)
    if not df.empty:
        df["case"] = df["case"].astype(str)
        df = df.sort_values(["method", "case", "class_index"], key=_class_key).reset_index(drop=True)
    summary = summarize(df, bdf) if not df.empty else pd.DataFrame()
    write_table(df, out)
    if b_path is not None:
        write_table(bdf, b_path)
    if s_path is not None:
        write_table(summary, s_path)
    if as_json:
        doc = {**(extra or {}), "cases": int(df["case"].nunique()) if not df.empty else 0, "failed": failed,
               "output": str(out), "bins": str(b_path) if b_path else None,
               "summary": summary_json(summary) if not summary.empty else {}}
        emit_json(doc)
    n = int(df["case"].nunique()) if not df.empty else 0
    log(f"evaluated {n} case(s) -> {out}" + (f" (+ {b_path}, {s_path})" if b_path else ""), quiet)
    finish(failed=failed)


def _class_key(s: pd.Series) -> pd.Series:
    # the "all" row (class_index -1) after the class rows of its case
    return s.where(s != -1, 10**9) if s.name == "class_index" else s


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
