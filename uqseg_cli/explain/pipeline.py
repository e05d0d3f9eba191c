"""What `uqseg explain` does, step by step, on opened inputs: the stage (stages/explain.py) opens them and calls
:func:`explain`.

Steps (each writes into the output folder):

1. one no-grad pass of the quality regressor over every case: predicted quality and penultimate embedding;
2. Grad-CAM for the selected cases (all, ``--worst N``, ``--best N``) through the crash-safe stage runner:
   ``gradcam-<direction>.h5`` (maps on each case's original grid) and ``gradcam-<direction>/<case>.png``
   (overlays, or a montage of the most relevant slices for volumes);
3. UMAP of the embeddings (``umap.csv`` + ``umap.png``) and, with a feature table, of the features
   (``umap_features.csv`` + ``.png``);
4. predicted-vs-true scatter, reliability diagrams from `evaluate`'s per-bin sums, uncertainty-map overlays
   for the worst cases;
5. ``report.html`` linking everything.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from uqseg_cli.errors import CaseError, InputError, UqsegError
from uqseg_cli.explain import plots
from uqseg_cli.explain.report import Figure, Section, write_report
from uqseg_cli.parsing import split_list
from uqseg_cli.progress import Progress, Steps, log, warn
from uqseg_cli.quality.meta import QualityMeta

SCORE_CASE = ("case", "case_id")
SCORE_PRED = ("predicted_dice", "predicted_iou", "predicted", "predicted_quality", "prediction", "pred")
SCORE_TRUE = ("true_dice", "true_iou", "true", "true_quality", "target", "dice")
UMAP_COLUMNS = ["case", "x", "y", "predicted_dice", "true_dice", "method", "measure"]


@dataclass
class ExplainOptions:
    """Options of one explain run (see ``uqseg explain --help``)."""

    out_dir: Path
    direction: str = "high"
    cam_method: str = "gradcam"
    layer: str | None = None
    worst: int | None = None
    best: int | None = None
    slices: int = 9
    seed: int = 0
    n_neighbors: int = 15
    min_dist: float = 0.1
    color_by: str = "auto"
    uncertainty_cases: int = 5
    method: str | None = None
    measure: str | None = None
    formats: tuple[str, ...] = ("png",)
    batch_size: int = 8
    device: str = "cpu"
    overwrite: bool = False
    quiet: bool = False
    gradcam: bool = True


@dataclass
class ExplainResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    summary: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- pure helpers


def select_cases(predicted: Mapping[str, float], worst: int | None, best: int | None) -> list[str]:
    """Cases to explain: all (neither given), else the ``worst`` lowest and ``best`` highest predicted.

    Ties are broken by case id; cases without a finite prediction are never selected by worst/best.
    Returns case ids sorted by id.
    """
    if worst is None and best is None:
        return sorted(predicted)
    ranked = sorted((float(v), k) for k, v in predicted.items() if np.isfinite(v))
    chosen: set[str] = set()
    if worst:
        chosen.update(k for _, k in ranked[: int(worst)])
    if best:
        chosen.update(k for _, k in sorted(ranked, key=lambda t: (-t[0], t[1]))[: int(best)])
    return sorted(chosen)


def safe_name(case_id: str) -> str:
    """A file-name-safe version of a case id, one-to-one: letters, digits and ``._-`` stay, every other byte
    (UTF-8) becomes ``~XX`` (hex), a leading ``.`` too — so ``IMD 013`` (``IMD~20013``) and ``IMD_013`` never
    share a file."""
    out = []
    for i, ch in enumerate(case_id):
        if re.fullmatch(r"[A-Za-z0-9_-]", ch) or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.append("".join(f"~{b:02X}" for b in ch.encode("utf-8", errors="surrogatepass")))
    return "".join(out) or "~"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_scores(
    path: Path,
    method: str | None = None,
    measure: str | None = None,
    framework: str | None = None,
    prefer: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """``scores.csv`` of `uqseg score` as columns ``case, predicted, true`` (+ ``method``, ``measure``).

    Accepted column names: case ``case``/``case_id``; prediction ``predicted_dice``/``predicted_iou``/
    ``predicted``/...; truth ``true_dice``/``true_iou``/``true``/... (optional). Rows are filtered by
    ``method``/``measure``/``framework`` when those columns exist (an explicit filter that matches nothing is an
    error); ``prefer`` (e.g. the loaded model's method, measure and framework) filters likewise but only where it
    leaves rows. One row per case must remain.
    """
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot read CSV: {exc}") from None
    case_col = next((c for c in SCORE_CASE if c in df.columns), None)
    pred_col = next((c for c in SCORE_PRED if c in df.columns), None)
    if pred_col is None:
        pred_col = next((c for c in df.columns if str(c).startswith("predicted")), None)
    true_col = next((c for c in SCORE_TRUE if c in df.columns), None)
    if case_col is None or pred_col is None:
        raise InputError(
            f"{path}: needs a case column ({'/'.join(SCORE_CASE)}) and a prediction column "
            f"({'/'.join(SCORE_PRED)}); found {', '.join(map(str, df.columns))}"
        )
    for col, want in (("method", method), ("measure", measure), ("framework", framework)):
        if want is not None and col in df.columns:
            df = df[df[col].astype(str) == want]
            if df.empty:
                raise InputError(f"{path}: no rows with {col} = {want!r}")
    for col, want in (prefer or {}).items():
        if want is not None and col in df.columns and df[col].astype(str).nunique() > 1:
            sub = df[df[col].astype(str) == str(want)]
            if not sub.empty:
                df = sub
    out = pd.DataFrame(
        {
            "case": df[case_col].astype(str),
            "predicted": pd.to_numeric(df[pred_col], errors="coerce"),
            "true": pd.to_numeric(df[true_col], errors="coerce") if true_col else np.nan,
            "method": df["method"].astype(str) if "method" in df.columns else "",
            "measure": df["measure"].astype(str) if "measure" in df.columns else "",
            "framework": df["framework"].astype(str) if "framework" in df.columns else "",
        }
    )
    dup = out["case"][out["case"].duplicated()].unique().tolist()
    if dup:
        raise InputError(
            f"{path}: several rows for case {dup[0]!r} (one per method/measure/framework); choose with "
            "--method/--measure/--framework"
        )
    return out.set_index("case", drop=False)


def reliability_groups(bins: pd.DataFrame, variant: str = "toplabel") -> list[dict]:
    """Pool `evaluate`'s per-bin sums (``metrics.bins.csv``) over cases, per method (and class).

    For each (method, class) of ``variant``: ``count``/``sum_confidence``/``sum_accuracy`` per bin summed over
    cases and raters (what the diagram draws), ``lower``/``upper`` bin edges, and ``ece`` = the mean over raters
    of each rater's pooled ECE (what `evaluate` reports as the pooled value). Also ``n_cases``, ``n_raters``.
    """
    need = {"method", "rater", "variant", "class", "bin", "lower", "upper", "count", "sum_confidence", "sum_accuracy"}
    missing = sorted(need - set(bins.columns))
    if missing:
        raise InputError(f"per-bin calibration table: missing column(s) {', '.join(missing)}")
    b = bins[bins["variant"].astype(str) == variant]
    out = []
    case_col = "case_id" if "case_id" in b.columns else ("case" if "case" in b.columns else None)
    for (method, cls), sub in b.groupby(["method", "class"], sort=True):
        per_rater = sub.groupby(["rater", "bin"], sort=True)[["count", "sum_confidence", "sum_accuracy"]].sum()
        eces = []
        for _, rb in per_rater.groupby(level="rater"):
            r = plots.reliability_from_sums(rb["count"], rb["sum_confidence"], rb["sum_accuracy"])
            eces.append(r["ece"])
        pooled = sub.groupby("bin", sort=True).agg(
            lower=("lower", "first"),
            upper=("upper", "first"),
            count=("count", "sum"),
            sum_confidence=("sum_confidence", "sum"),
            sum_accuracy=("sum_accuracy", "sum"),
        )
        finite = [e for e in eces if np.isfinite(e)]
        out.append(
            {
                "method": str(method),
                "class": str(cls),
                "lower": pooled["lower"].to_numpy(float),
                "upper": pooled["upper"].to_numpy(float),
                "count": pooled["count"].to_numpy(float),
                "sum_confidence": pooled["sum_confidence"].to_numpy(float),
                "sum_accuracy": pooled["sum_accuracy"].to_numpy(float),
                "ece": float(np.mean(finite)) if finite else math.nan,
                "n_raters": int(sub["rater"].nunique()),
                "n_cases": int(sub[case_col].nunique()) if case_col else 0,
            }
        )
    return out


# ------------------------------------------------------------------------------------------- case data


def display_arrays(view) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Image ``(C, *spatial)``, segmentation and reference (or None) of a case, for figures."""
    seg = np.asarray(view.get("segmentation")) if view.has("segmentation") else None
    image = np.asarray(view.get("image"))
    if seg is not None and image.ndim == seg.ndim:
        image = image[None]
    ref = np.asarray(view.get("reference")) if view.has("reference") else None
    return image, seg, ref


def true_quality(view, target: str = "dice", num_classes: int | None = None) -> float:
    """Dice (or IoU) of the case's ``segmentation`` against its ``reference``; nan without a reference."""
    from uqseg_cli.metrics.overlap import overlap_per_class

    if not view.has("reference") or not view.has("segmentation"):
        return math.nan
    seg = np.asarray(view.get("segmentation"))
    ref = np.asarray(view.get("reference"))
    k = num_classes
    if k is None and view.has("probabilities"):
        k = int(view.dataset("probabilities").shape[0])
    if k is None:
        k = int(max(seg.max(), ref.max())) + 1
    dice, iou = overlap_per_class(seg, ref, k)
    return float((iou if target == "iou" else dice).mean())


def _method_measure(meta: QualityMeta | None, opts: ExplainOptions, sf) -> tuple[str, str]:
    method = opts.method or (meta.method if meta is not None else None)
    measures = meta.measure_list if meta is not None else []
    measure = opts.measure or (measures[0] if measures else None) or "entropy"
    if method is None:
        methods = list(sf.config.get("methods", [])) if sf is not None else []
        method = methods[0] if methods else ""
    return str(method), str(measure)


def _measure_label(meta: QualityMeta | None, fallback: str) -> str:
    if meta is None:
        return fallback
    measures = meta.measure_list
    return "+".join(map(str, measures)) if measures else fallback


# ------------------------------------------------------------------------------------------- model passes


def predict_and_embed(model, sf, case_ids: Sequence[str], meta: QualityMeta, opts: ExplainOptions):
    """No-grad pass over ``case_ids``: ``{case: predicted}``, ``{case: embedding (F,)}``, ``{case: error}``."""
    import torch

    from uqseg_cli.quality.inputs import build_inputs

    pred: dict[str, float] = {}
    emb: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    batch: list[tuple[str, torch.Tensor]] = []

    def flush():
        if not batch:
            return
        x = torch.stack([t for _, t in batch]).to(opts.device)
        with torch.no_grad():
            e = model.embed(x)
            y = model(x)
        for (cid, _), yi, ei in zip(batch, y.float().cpu().numpy(), e.float().cpu().numpy(), strict=True):
            pred[cid] = float(yi)
            emb[cid] = ei.reshape(-1)
        batch.clear()

    prog = Progress(len(case_ids), "explain: quality model", quiet=opts.quiet)
    done = 0
    for cid in case_ids:
        try:
            batch.append((cid, build_inputs(sf.case(cid), meta)))
        except (CaseError, UqsegError) as exc:
            failed[cid] = str(exc)
            warn(f"case {cid}: {exc}")
            prog.advance(cid, "failed")
            continue
        if len(batch) >= opts.batch_size:
            n = len(batch)
            flush()
            done += n
            prog.update(done + len(failed), cid)
    flush()
    prog.update(len(case_ids), case_ids[-1] if case_ids else "")
    prog.close()
    return pred, emb, failed


def case_caption(case_id: str, predicted: float, true: float, output: float | None = None, target: str = "dice") -> str:
    """The one description of a case that a figure's title and its caption in the report both show.

    ``predicted``: the prediction of the scores table (out-of-fold where cross-fitted); ``output``: what the
    explained model itself returns for the case (differs from ``predicted`` when the model was refitted on all
    cases, so both are named)."""
    text = f"{case_id}: predicted {target} {predicted:.3f}, true {true:.3f}"
    if output is not None and np.isfinite(output) and not (np.isfinite(predicted) and abs(output - predicted) < 5e-4):
        text += f" (this model's output {output:.3f})"
    return text


def _gradcam_step(
    model, meta: QualityMeta, sf, sf_path: Path, ids, opts, model_fp: str, result: ExplainResult,
    resume_config: Callable[..., dict],
    predicted: Mapping[str, float] | None = None, truth: Mapping[str, float] | None = None,
) -> Path | None:
    import torch

    from uqseg_cli.explain.gradcam import combined_cam, default_layers, resize_map
    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.store import write_array
    from uqseg_cli.quality.inputs import build_inputs

    if not ids:
        return None
    probe = build_inputs(sf.case(ids[0]), meta)[None].to(opts.device)
    layers = split_list(opts.layer) if opts.layer else default_layers(model, probe)
    layer = "+".join(layers)
    tag = f"gradcam-{opts.direction}" if opts.cam_method == "gradcam" else f"{opts.cam_method}-{opts.direction}"
    fig_dir = opts.out_dir / tag
    label = f"{'Grad-CAM' if opts.cam_method == 'gradcam' else 'HiResCAM'} ({opts.direction})"
    config = resume_config(model_sha256=model_fp, layer=layer)

    warned: list[bool] = []
    cache: dict[str, tuple[torch.Tensor, float]] = {}
    position = {c: i for i, c in enumerate(ids)}

    def cam_of(case_id: str) -> tuple[torch.Tensor, float]:
        """The case's map on the model grid and the model output, computed for up to --batch-size cases at
        once (this case and the next ones in run order; maps are per-input, so batching changes nothing)."""
        if case_id not in cache:
            cache.clear()
            chunk = ids[position[case_id] : position[case_id] + max(1, opts.batch_size)]
            good, xs = [], []
            for c in chunk:
                try:
                    xs.append(build_inputs(sf.case(c), meta))
                    good.append(c)
                except Exception:
                    if c == case_id:
                        raise  # the others fail, if at all, in their own turn
            res = combined_cam(model, torch.stack(xs).to(opts.device), layers, direction=opts.direction,
                               method=opts.cam_method)
            if int(np.prod(res.layer_shape[2:])) == 1 and not warned:
                warned.append(True)
                warn(f"layer {layer!r} outputs a single voxel at input size {meta.input_size}: the map "
                     "is uniform; choose an earlier stage with --layer")
            for i, c in enumerate(good):
                cache[c] = (res.cam[i : i + 1].cpu(), float(res.output[i]))
        return cache.pop(case_id)

    def process(case_id: str, group) -> None:
        view = sf.case(case_id)
        cam_small, output = cam_of(case_id)
        image, seg, ref = display_arrays(view)
        spatial = image.shape[1:]
        cam = resize_map(cam_small, tuple(spatial))[0].numpy().astype(np.float32)
        write_array(group, "gradcam", cam)
        group.attrs["predicted"] = output
        group.attrs["layer"] = layer
        group.attrs["direction"] = opts.direction
        group.attrs["spacing"] = list(view.spacing) if view.has("segmentation") else []
        target = meta.target
        pred = (predicted or {}).get(case_id, output)
        title = case_caption(case_id, pred, (truth or {}).get(case_id, math.nan), output, target)
        fig = plots.heat_figure(image, cam, seg, ref, title=title, heat_label=label, num_slices=opts.slices,
                                heat_units="relevance (0 = none, 1 = the case's maximum)")
        plots.save_figure(fig, fig_dir / safe_name(case_id), opts.formats)

    run = StageRun(
        stage="explain",
        out=opts.out_dir / f"{tag}.h5",
        config=config,
        case_ids=list(ids),
        parent=sf_path,
        overwrite=opts.overwrite,
        quiet=opts.quiet,
    )
    log(f"{label} of layer(s) {layer} (combined) for {len(ids)} case(s)", opts.quiet)
    rr = run_stage(run, process)
    result.failed.update(rr.failed)
    result.interrupted = rr.interrupted
    result.summary["gradcam"] = {"layer": layer, "file": str(rr.out), "cases": len(ids)}
    result.files.append(rr.out)
    return rr.out


# ------------------------------------------------------------------------------------------- the run


def _owned_figures(out_dir: Path) -> list[Path]:
    pats = ["gradcam-*/*", "hirescam-*/*", "uncertainty/*", "umap*.png", "umap*.pdf", "pred_vs_true.*",
            "reliability-*.*"]
    return [p for pat in pats for p in out_dir.glob(pat) if p.suffix in {".png", ".pdf"} and p.is_file()]


def check_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write over a finished explain folder unless ``--overwrite`` (then remove its figures)."""
    done = [p for p in ("report.html", "umap.csv", "umap_features.csv") if (out_dir / p).exists()]
    if done and not overwrite:
        raise UqsegError(f"{out_dir}: holds a finished explain run ({', '.join(done)}); pass --overwrite to replace it")
    if overwrite:
        for p in _owned_figures(out_dir):
            p.unlink()


def explain(
    opts: ExplainOptions,
    sf=None,
    sf_path: Path | None = None,
    model=None,
    meta: QualityMeta | None = None,
    model_path: Path | None = None,
    scores: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
    bins: pd.DataFrame | None = None,
    summary_table: pd.DataFrame | None = None,
    scores_summary: pd.DataFrame | None = None,
    extra_links: list[tuple[str, str]] | None = None,
    resume_config: Callable[..., dict] | None = None,
) -> ExplainResult:
    """Run every step that the given inputs allow (see the module docstring); returns what was written.

    ``resume_config(model_sha256=..., layer=...)``: the resume config of the Grad-CAM file (the stage's options
    with these resolved values; stages/explain.py), needed with a model unless ``opts.gradcam`` is off.
    Each step is announced (with a line every 10 s while it runs) and per-case loops show progress with ETA."""
    steps = Steps(5, "explain", opts.quiet)
    try:
        return _explain(
            opts, steps, sf=sf, sf_path=sf_path, model=model, meta=meta, model_path=model_path, scores=scores,
            features=features, bins=bins, summary_table=summary_table, scores_summary=scores_summary,
            extra_links=extra_links, resume_config=resume_config,
        )
    finally:
        steps.close()


def _explain(
    opts: ExplainOptions,
    steps: Steps,
    sf=None,
    sf_path: Path | None = None,
    model=None,
    meta: QualityMeta | None = None,
    model_path: Path | None = None,
    scores: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
    bins: pd.DataFrame | None = None,
    summary_table: pd.DataFrame | None = None,
    scores_summary: pd.DataFrame | None = None,
    extra_links: list[tuple[str, str]] | None = None,
    resume_config: Callable[..., dict] | None = None,
) -> ExplainResult:
    """Run every step that the given inputs allow (see the module docstring); returns what was written."""
    from uqseg_cli.io.tables import write_table
    from uqseg_cli.metrics.regression import regression_summary

    out = opts.out_dir
    out.mkdir(parents=True, exist_ok=True)
    check_output(out, opts.overwrite)
    result = ExplainResult(out)
    sections: list[Section] = []
    target = meta.target if meta is not None else "dice"
    method, measure = _method_measure(meta, opts, sf)

    # 1. cases, predictions, truth, embeddings
    steps.start("cases, predictions" + (" and the quality model's embedding" if model is not None else ""))
    case_ids: list[str] = list(sf.case_ids) if sf is not None else []
    if scores is not None:
        if sf is not None:
            missing = sorted(set(scores.index) - set(case_ids))
            if missing:
                warn(f"{len(missing)} case(s) of the scores table are not in {sf.path} (e.g. {missing[0]}); skipped")
            case_ids = [c for c in case_ids if c in scores.index]
        else:
            case_ids = sorted(scores.index)
    if not case_ids:
        raise InputError("no cases to explain (the inputs share no complete case)")
    pred: dict[str, float] = {}
    emb: dict[str, np.ndarray] = {}
    if model is not None:
        pred, emb, failed = predict_and_embed(model, sf, case_ids, meta, opts)
        result.failed.update(failed)
    model_pred = dict(pred)
    if scores is not None:
        pred = {c: float(scores.loc[c, "predicted"]) for c in case_ids}
    truth: dict[str, float] = {}
    for c in case_ids:
        if scores is not None and np.isfinite(scores.loc[c, "true"]):
            truth[c] = float(scores.loc[c, "true"])
        elif sf is not None:
            truth[c] = true_quality(sf.case(c), target)
        else:
            truth[c] = math.nan
    table = pd.DataFrame(
        {
            "case": case_ids,
            "predicted_dice": [pred.get(c, math.nan) for c in case_ids],
            "true_dice": [truth.get(c, math.nan) for c in case_ids],
        }
    )
    if model is not None and scores is not None:
        table["model_predicted"] = [model_pred.get(c, math.nan) for c in case_ids]
    have_true = table["true_dice"].notna()
    have_pred = table["predicted_dice"].notna()
    stats_rows = []
    if (have_true & have_pred).sum() >= 2:
        ok = have_true & have_pred
        s = regression_summary(table.loc[ok, "true_dice"], table.loc[ok, "predicted_dice"])
        stats_rows.append({"method": method, "measure": _measure_label(meta, measure), **s})
        result.summary["regression"] = s

    # 2. Grad-CAM
    steps.start("Grad-CAM" if model is not None and opts.gradcam else "Grad-CAM (skipped)")
    figs_cam: list[Figure] = []
    if model is not None and opts.gradcam:
        chosen = select_cases({c: v for c, v in pred.items() if c not in result.failed}, opts.worst, opts.best)
        chosen = [c for c in chosen if c not in result.failed]
        fp = file_sha256(model_path) if model_path else ""
        if resume_config is None:
            raise TypeError("explain: Grad-CAM needs resume_config (the stage's, stages/explain.py)")
        h5 = _gradcam_step(model, meta, sf, sf_path, chosen, opts, fp, result, resume_config, predicted=pred,
                           truth=truth)
        if result.interrupted:
            return result
        if h5 is not None:
            import h5py

            tag = h5.stem
            with h5py.File(h5, "r") as f:  # the outputs the figure titles show (also for resumed cases)
                cam_out = {c: float(f[f"cases/{c}"].attrs["predicted"]) for c in chosen if f"cases/{c}" in f}
            order = sorted(chosen, key=lambda c: (pred.get(c, math.inf), c))
            for c in order:
                png = out / tag / f"{safe_name(c)}.png"
                if png.exists():
                    pdf = png.with_suffix(".pdf")
                    out_c = cam_out.get(c)
                    figs_cam.append(
                        Figure(
                            png.relative_to(out).as_posix(),
                            case_caption(c, pred.get(c, out_c if out_c is not None else math.nan),
                                         truth.get(c, math.nan), out_c, target),
                            link=pdf.relative_to(out).as_posix() if pdf.exists() else None,
                        )
                    )
                    result.files.append(png)

    # 3. UMAP
    steps.start("UMAP (the first run in a process compiles numba code: up to a minute)")
    figs_umap: list[Figure] = []
    links: list[tuple[str, str]] = []
    color_by = opts.color_by
    if color_by == "auto":
        color_by = "true" if have_true.any() else "predicted"
    col = "true_dice" if color_by == "true" else "predicted_dice"
    if emb:
        ids = [c for c in case_ids if c in emb]
        if len(ids) >= 3:
            from uqseg_cli.explain.embedding import umap_embed

            X = np.stack([emb[c] for c in ids])
            xy = umap_embed(X, seed=opts.seed, n_neighbors=opts.n_neighbors, min_dist=opts.min_dist)
            sub = table.set_index("case").loc[ids]
            ut = pd.DataFrame(
                {
                    "case": ids,
                    "x": xy[:, 0],
                    "y": xy[:, 1],
                    "predicted_dice": sub["predicted_dice"].to_numpy(),
                    "true_dice": sub["true_dice"].to_numpy(),
                    "method": method,
                    "measure": _measure_label(meta, measure),
                }
            )[UMAP_COLUMNS]
            write_table(ut, out / "umap.csv")
            fig = plots.umap_figure(
                xy, ut[col].to_numpy(), f"{color_by} {target}", "UMAP of the regressor's penultimate embedding", ids
            )
            paths = plots.save_figure(fig, out / "umap", opts.formats)
            figs_umap.append(Figure("umap.png", f"embedding, coloured by {color_by} {target}", _pdf(paths, out)))
            links.append(("umap.csv", "umap.csv (embedding coordinates)"))
            result.files += [out / "umap.csv", *paths]
        else:
            warn(f"UMAP needs at least 3 cases, have {len(ids)}; umap.csv not written")
    if features is not None:
        from uqseg_cli.explain.embedding import feature_matrix, umap_embed

        fids, FX, fnames = feature_matrix(features)
        fids_keep = [i for i, c in enumerate(fids) if not case_ids or c in set(case_ids)]
        fids = [fids[i] for i in fids_keep]
        FX = FX[fids_keep]
        if len(fids) >= 3:
            xy = umap_embed(FX, seed=opts.seed, n_neighbors=opts.n_neighbors, min_dist=opts.min_dist, standardize=True)
            sub = table.set_index("case").reindex(fids)
            fm = sorted(features["method"].astype(str).unique()) if "method" in features.columns else []
            fme = sorted(features["measure"].astype(str).unique()) if "measure" in features.columns else []
            ft = pd.DataFrame(
                {
                    "case": fids,
                    "x": xy[:, 0],
                    "y": xy[:, 1],
                    "predicted_dice": sub["predicted_dice"].to_numpy(),
                    "true_dice": sub["true_dice"].to_numpy(),
                    "method": "+".join(fm),
                    "measure": "+".join(fme),
                }
            )[UMAP_COLUMNS]
            write_table(ft, out / "umap_features.csv")
            fig = plots.umap_figure(
                xy, ft[col].to_numpy(), f"{color_by} {target}", f"UMAP of {len(fnames)} standardised features", fids
            )
            paths = plots.save_figure(fig, out / "umap_features", opts.formats)
            figs_umap.append(
                Figure("umap_features.png", f"feature table ({len(fnames)} columns)", _pdf(paths, out))
            )
            links.append(("umap_features.csv", "umap_features.csv (feature-table coordinates)"))
            result.files += [out / "umap_features.csv", *paths]
        else:
            warn(f"UMAP of the features needs at least 3 cases, have {len(fids)}; skipped")

    # 4. plots
    steps.start("plots and uncertainty overlays")
    figs_plots: list[Figure] = []
    if (have_true & have_pred).sum() >= 2:
        ok = have_true & have_pred
        fig, _ = plots.pred_vs_true_figure(
            table.loc[ok, "true_dice"], table.loc[ok, "predicted_dice"], label=target,
            title=f"{method} / {_measure_label(meta, measure)}".strip(" /"),
        )
        paths = plots.save_figure(fig, out / "pred_vs_true", opts.formats)
        figs_plots.append(Figure("pred_vs_true.png", f"predicted vs true {target}", _pdf(paths, out)))
        result.files += paths
    rel_rows = []
    if bins is not None and not bins.empty:
        for grp in reliability_groups(bins):  # top-label bins: one group per method (class "all")
            fig, r = plots.reliability_figure(
                grp["count"], grp["sum_confidence"], grp["sum_accuracy"], lower=grp["lower"], upper=grp["upper"],
                ece=grp["ece"],
                title=f"{grp['method']}: top-label, {grp['n_cases']} case(s), {grp['n_raters']} rater(s)",
            )
            stem = f"reliability-{safe_name(grp['method'])}"
            paths = plots.save_figure(fig, out / stem, opts.formats)
            figs_plots.append(Figure(f"{stem}.png", f"reliability diagram, {grp['method']}", _pdf(paths, out)))
            rel_rows.append({"method": grp["method"], "ece (mean over raters)": grp["ece"], "cases": grp["n_cases"]})
            result.files += paths
    figs_unc: list[Figure] = []
    if sf is not None and opts.uncertainty_cases > 0:
        rank = pred if any(np.isfinite(v) for v in pred.values()) else truth
        ranked = sorted((v, c) for c, v in rank.items() if np.isfinite(v) and c not in result.failed)
        key = f"{method}/{measure}"
        shown = [c for _, c in ranked[: opts.uncertainty_cases]]
        from uqseg_cli.quality.regions import uncertainty_direction

        maps_ = {}
        for c in shown:
            view = sf.case(c)
            if not view.has(key):
                warn(f"case {c}: no {key} map in {sf.path}; no uncertainty overlay")
                continue
            maps_[c] = uncertainty_direction(measure, view.get(key)).astype(np.float32)
        if maps_:
            k = _num_classes(sf.case(next(iter(maps_))))
            scale = plots.uncertainty_scale(measure, k, list(maps_.values()))
            result.summary["uncertainty_scale"] = scale
        unc_prog = Progress(len(maps_), "explain: uncertainty overlays", quiet=opts.quiet)
        for c, umap_ in maps_.items():
            image, seg, ref = display_arrays(sf.case(c))
            text = case_caption(c, pred.get(c, math.nan), truth.get(c, math.nan), model_pred.get(c), target)
            fig = plots.heat_figure(
                image, umap_, seg, ref, title=text, heat_label=f"{method} {scale['label']}", num_slices=opts.slices,
                normalize=False, vmax=scale["vmax"], heat_units=scale["units"],
            )
            paths = plots.save_figure(fig, out / "uncertainty" / safe_name(c), opts.formats)
            figs_unc.append(Figure(paths[0].relative_to(out).as_posix(), f"{text}; {method} {scale['label']}",
                                   _pdf(paths, out)))
            result.files += paths
            unc_prog.advance(c)
        unc_prog.close()

    # 5. report
    steps.start("report.html")
    summary_tables = []
    shown_method = str(scores["method"].iloc[0]) if scores is not None and len(scores) else method
    shown_measure = str(scores["measure"].iloc[0]) if scores is not None and len(scores) else _measure_label(
        meta, measure)
    shown_fw = (str(scores["framework"].iloc[0]) if scores is not None and len(scores) and
                scores["framework"].iloc[0] else (meta.framework if meta is not None else None))
    quality_rows, callout, level = quality_headline(
        result.summary.get("regression"), scores_summary, shown_method, shown_measure, shown_fw, target
    )
    result.summary["headline"] = {"text": callout, "level": level}
    if quality_rows is not None:
        summary_tables.append(("Quality prediction (the regressor and the best single feature)", quality_rows))
    elif stats_rows:
        summary_tables.append(("Quality prediction", pd.DataFrame(stats_rows)))
    worst = table.sort_values(["predicted_dice", "case"]).head(10)
    if "model_predicted" in worst:
        worst = worst.rename(columns={"model_predicted": "model_output"})
    summary_tables.append((f"Lowest predicted {target} (10 of {len(table)} cases; every case: the scores CSV)",
                           worst))
    if rel_rows:
        summary_tables.append(("Calibration (from evaluate's per-bin sums)", pd.DataFrame(rel_rows)))
    if summary_table is not None and not summary_table.empty:
        digest = evaluate_digest(summary_table)
        if not digest.empty:
            summary_tables.append(
                ("evaluate: key metrics per method and class (pooled where evaluate pools, else the mean over "
                 "cases; every metric: the metrics summary CSV)", digest)
            )
    if result.failed:
        summary_tables.append(
            ("Failed cases", pd.DataFrame({"case": list(result.failed), "error": list(result.failed.values())}))
        )
    links = [*links, *(extra_links or [])]
    sections.append(Section("Summary", tables=summary_tables, links=links, callout=callout, level=level))
    if figs_plots:
        sections.append(Section("Quality and calibration", figures=figs_plots))
    if figs_umap:
        sections.append(Section("UMAP", text=f"seed {opts.seed}, n_neighbors {opts.n_neighbors}", figures=figs_umap))
    if figs_cam:
        gc = result.summary.get("gradcam", {})
        h5rel = Path(gc["file"]).relative_to(out).as_posix() if gc.get("file") else None
        sections.append(
            Section(
                f"Grad-CAM ({opts.direction})",
                text=f"layer {gc.get('layer')}; target = {'+' if opts.direction == 'high' else '-'}predicted "
                f"{target}; cases by predicted {target}, lowest first",
                figures=figs_cam,
                links=[(h5rel, f"{h5rel} (maps on each case's grid)")] if h5rel else [],
            )
        )
    if figs_unc:
        sections.append(Section(f"Uncertainty maps of the {len(figs_unc)} lowest-predicted cases", figures=figs_unc))
    report = write_report(
        out / "report.html", "uqseg explain", sections,
        subtitle=f"{len(case_ids)} case(s); model {model_path.name if model_path else '(none)'}; "
        f"input {sf.path if sf is not None else '(scores only)'}",
    )
    result.files.append(report)
    result.summary["cases"] = len(case_ids)
    result.summary["report"] = str(report)
    return result


EVALUATE_KEY_METRICS = ("dice_consensus", "ece", "brier", "nll", "crps_gaussian_ml", "crps_curvas_ml")


def evaluate_digest(summary: pd.DataFrame) -> pd.DataFrame:
    """A few key numbers of `evaluate`'s ``metrics.summary.csv``: one row per method and class (background left
    out), one column per metric of :data:`EVALUATE_KEY_METRICS` present; the ``pooled`` value where evaluate
    pools (ECE family), else the ``mean`` over cases."""
    need = {"method", "class", "metric", "mean"}
    if not need <= set(summary.columns):
        return pd.DataFrame()
    s = summary[summary["metric"].isin(EVALUATE_KEY_METRICS) & (summary["class"].astype(str) != "background")]
    rows = []
    for (m, cls), sub in s.groupby(["method", "class"], sort=True):
        r = {"method": str(m), "class": str(cls)}
        for metric in EVALUATE_KEY_METRICS:
            hit = sub[sub["metric"] == metric]
            if hit.empty:
                continue
            pooled = hit["pooled"].iloc[0] if "pooled" in hit else math.nan
            r[metric] = float(pooled if pd.notna(pooled) else hit["mean"].iloc[0])
        rows.append(r)
    df = pd.DataFrame(rows)
    return df[[c for c in ("method", "class", *EVALUATE_KEY_METRICS) if c in df.columns]] if rows else df


def quality_headline(
    stats: dict | None,
    summary: pd.DataFrame | None,
    method: str,
    measure: str,
    framework: str | None,
    target: str = "dice",
) -> tuple[pd.DataFrame | None, str, str]:
    """What the report says first: does the quality model work? Returns (table, sentence, level).

    From `score`'s summary CSV (the regressor's row and the ``baseline`` row = best single feature, for the
    shown method and measure) when given, else from ``stats`` (explain's own regression summary). Level ``fail``
    when R² ≤ 0 (worse than predicting the mean quality for every case), ``weak`` when below the best single
    feature, else ``ok``; ``""`` with no numbers.
    """
    table, row, base = None, None, None
    if summary is not None and not summary.empty and {"method", "measure", "framework", "r2"} <= set(summary.columns):
        sel = summary[(summary["method"].astype(str) == method) & (summary["measure"].astype(str) == measure)]
        if framework is not None:
            hit = sel[sel["framework"].astype(str) == str(framework)]
            row = hit.iloc[0] if len(hit) else None
        hit = sel[sel["framework"].astype(str) == "baseline"]
        base = hit.iloc[0] if len(hit) else None
        keep = [r for r in (row, base) if r is not None]
        if keep:
            cols = [c for c in ("method", "measure", "framework", "n", "r2", "pearson", "spearman", "mae", "aurc",
                                "detail") if c in sel.columns]
            table = pd.DataFrame(keep)[cols]
    if row is not None:
        r2, n, pr, mae_ = float(row["r2"]), int(row.get("n", 0)), row.get("pearson"), row.get("mae")
    elif stats:
        r2, n, pr, mae_ = float(stats["r2"]), int(stats["n"]), stats.get("pearson"), stats.get("mae")
    else:
        return table, "", ""
    name = f"{framework or 'the regressor'} ({method}/{measure})"
    nums = f"R² = {r2:.3f}, Pearson r = {float(pr):.3f}, MAE = {float(mae_):.3f}, n = {n}"
    base_txt = ""
    if base is not None and np.isfinite(float(base["r2"])):
        base_txt = f"the best single feature ({base.get('detail', 'baseline')}) reaches R² = {float(base['r2']):.3f}"
        if float(base["r2"]) <= 0:
            base_txt += " (no better than the mean either)"
    if not np.isfinite(r2) or r2 <= 0:
        text = (f"The quality model fails here: {name} has {nums}. R² ≤ 0 means its predicted {target} is no "
                f"better than predicting the mean {target} for every case; do not rank or flag cases with it.")
        return table, text + (f" For comparison, {base_txt}." if base_txt else ""), "fail"
    if base is not None and np.isfinite(float(base["r2"])) and r2 < float(base["r2"]):
        return table, (f"The quality model adds nothing here: {name} has {nums}, below the best single feature: "
                       f"{base_txt}. Use the feature, or more and more varied training cases."), "weak"
    return table, f"{name} predicts {target}: {nums}" + (f"; {base_txt}." if base_txt else "."), "ok"


def _num_classes(view) -> int:
    if view.has("probabilities"):
        return int(view.dataset("probabilities").shape[0])
    seg = np.asarray(view.get("segmentation")) if view.has("segmentation") else np.zeros(1, np.uint8)
    return max(int(seg.max()) + 1, 2)


def _pdf(paths: list[Path], out: Path) -> str | None:
    pdf = [p for p in paths if p.suffix == ".pdf"]
    return pdf[0].relative_to(out).as_posix() if pdf else None
