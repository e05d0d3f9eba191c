"""Per-case multi-rater evaluation (the CURVAS protocol) and its dataset-level summary.

:func:`evaluate_case` turns one case's class probabilities, segmentation and rater masks into table rows: one row
per foreground class (consensus/dissensus, Dice variants, the CURVAS confidence, class-wise calibration, volumes and
volume CRPS) and one row ``class = "all"`` (top-label calibration, Brier score, NLL), plus the per-bin calibration
sums (one row per rater, variant, class and bin) from which :func:`pooled_calibration` computes dataset-level ECE
exactly, however the cases were split over shards. :func:`summarize` condenses the per-case rows into mean, std and
median per method, class and metric. No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from uqseg_cli.metrics import calibration as cal
from uqseg_cli.metrics import crps as crps_mod
from uqseg_cli.metrics.dice import dice, soft_dice
from uqseg_cli.metrics.multirater import (
    challenge_confidence,
    consensus,
    consensus_dice,
    curvas2024_rowwise_dice,
    curvas_crop_box,
    majority_vote,
    rater_fraction,
    rater_volumes,
    soft_labels,
    voxel_volume_ml,
)

PROTOCOLS = ("uqseg", "curvas2024")
#: number of bins the CURVAS 2024 evaluation uses for its top-label ECE
CURVAS2024_BINS = 50
DEFAULT_BINS = 15
#: tolerance on probabilities outside [0, 1] (float16 storage) before a case is refused
PROB_TOLERANCE = 1e-3

CLASS_COLUMNS = [
    "n_raters",
    "consensus_voxels",
    "dissensus_voxels",
    "union_voxels",
    "consensus_ratio",
    "dissensus_fraction",
    "dice_consensus",
    "dice_consensus_curvas",
    "dice_rater_mean",
    "dice_rater_min",
    "dice_rater_max",
    "dice_majority",
    "soft_dice_mean_rater",
    "confidence",
    "ece_class",
    "ece_class_fg",
    "mce_class",
    "brier_class",
    "brier_class_soft",
    "volume_pred_ml",
    "volume_seg_ml",
    "volume_rater_mean_ml",
    "volume_rater_std_ml",
]
ALL_COLUMNS = ["ece", "ece_fg", "mce", "ace", "ece_classwise", "brier", "brier_soft", "nll"]
BIN_COLUMNS = [
    "method",
    "case",
    "rater",
    "variant",
    "class",
    "class_index",
    "bin",
    "lower",
    "upper",
    "count",
    "sum_confidence",
    "sum_accuracy",
]
#: bins variant -> (metric name of its ECE, of its MCE or None, row class: "all" or per class)
VARIANTS = {
    "toplabel": ("ece", "mce"),
    "toplabel_fg": ("ece_fg", None),
    "class": ("ece_class", "mce_class"),
    "class_fg": ("ece_class_fg", None),
}


@dataclass(frozen=True)
class EvalOptions:
    """What to compute. ``protocol="curvas2024"`` crops to the in-plane box of ``image > 0`` and replaces the
    background probability by ``1 - sum(foreground)`` (clipped at 0) before every metric."""

    n_bins: int = DEFAULT_BINS
    crps_modes: tuple[str, ...] = ("gaussian",)
    protocol: str = "uqseg"

    def __post_init__(self) -> None:
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        bad = [m for m in self.crps_modes if m not in crps_mod.CRPS_MODES]
        if bad:
            raise ValueError(f"unknown CRPS mode(s) {bad}; choose from {crps_mod.CRPS_MODES}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose from {PROTOCOLS}")


@dataclass
class CaseInput:
    """One case (and method) to evaluate.

    probabilities ``(K, *spatial)`` in [0, 1]; segmentation ``(*spatial)`` labels (None: argmax of the
    probabilities); raters ``(R, *spatial)`` labels; spacing in mm per spatial axis; image ``(C, *spatial)`` (needed
    by the curvas2024 crop); sample_volumes ``(T, K)`` ml per stochastic sample (needed by the ensemble CRPS).
    """

    case_id: str
    method: str
    probabilities: np.ndarray
    raters: np.ndarray
    spacing: Sequence[float]
    segmentation: np.ndarray | None = None
    image: np.ndarray | None = None
    sample_volumes: np.ndarray | None = None


def crps_column(mode: str) -> str:
    return f"crps_{mode}_ml"


def _check(inp: CaseInput, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(inp.probabilities, dtype=np.float64)
    r = np.asarray(inp.raters)
    where = f"case {inp.case_id}" + (f", method {inp.method}" if inp.method else "")
    if p.ndim < 2 or p.shape[0] != num_classes:
        raise ValueError(f"{where}: probabilities have shape {p.shape}, expected ({num_classes}, *spatial)")
    if r.ndim != p.ndim or r.shape[1:] != p.shape[1:]:
        raise ValueError(f"{where}: raters have shape {r.shape}, expected (R, {', '.join(map(str, p.shape[1:]))})")
    if r.shape[0] < 1:
        raise ValueError(f"{where}: no rater masks")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{where}: probabilities contain NaN or infinity")
    if p.min() < -PROB_TOLERANCE or p.max() > 1 + PROB_TOLERANCE:
        raise ValueError(f"{where}: probabilities outside [0, 1] (range {p.min():.4g} .. {p.max():.4g})")
    if r.min() < 0 or r.max() >= num_classes:
        bad = int(np.argmax([(x.max() >= num_classes) or (x.min() < 0) for x in r]))
        raise ValueError(
            f"{where}: rater {bad + 1} has label {int(r[bad].max())} but the model has {num_classes} classes "
            f"(labels 0..{num_classes - 1})"
        )
    seg = np.argmax(p, axis=0) if inp.segmentation is None else np.asarray(inp.segmentation)
    if seg.shape != p.shape[1:]:
        raise ValueError(f"{where}: segmentation has shape {seg.shape}, expected {p.shape[1:]}")
    return np.clip(p, 0.0, 1.0), seg, r


def evaluate_case(
    inp: CaseInput, class_names: Sequence[str], opts: EvalOptions
) -> tuple[list[dict], list[dict]]:
    """Evaluate one case against its raters. Returns ``(rows, bin_rows)`` (see module docstring and
    ``docs/evaluate.md`` for the columns). Raises ``ValueError`` with a one-line message on inconsistent input."""
    k_all = len(class_names)
    p, seg, raters = _check(inp, k_all)
    voxel_ml = voxel_volume_ml(inp.spacing)
    if len(tuple(inp.spacing)) != p.ndim - 1:
        raise ValueError(f"case {inp.case_id}: spacing {tuple(inp.spacing)} does not match {p.ndim - 1} spatial axes")
    if opts.protocol == "curvas2024":
        if inp.image is None:
            raise ValueError(f"case {inp.case_id}: the curvas2024 protocol needs the image (for its crop)")
        rows_sl, cols_sl = curvas_crop_box(inp.image)
        p = p[..., rows_sl, cols_sl]
        seg = seg[..., rows_sl, cols_sl]
        raters = raters[..., rows_sl, cols_sl]
        p = np.concatenate([np.clip(1.0 - p[1:].sum(axis=0), 0.0, 1.0)[None], p[1:]], axis=0)
    need_ens = "ensemble" in opts.crps_modes
    if need_ens:
        if inp.sample_volumes is None:
            raise ValueError(f"case {inp.case_id}: the ensemble CRPS needs per-sample volumes (a samples.h5 input)")
        sv = np.asarray(inp.sample_volumes, dtype=np.float64)
        if sv.ndim != 2 or sv.shape[1] != k_all:
            raise ValueError(f"case {inp.case_id}: sample volumes have shape {sv.shape}, expected (T, {k_all})")

    n_raters = raters.shape[0]
    base = {"case": inp.case_id, "method": inp.method}
    bins_out: list[dict] = []

    def add_bins(bs: cal.BinSums, rater: int, variant: str, cls: str, k: int) -> None:
        lower, upper = bs.edges()
        for i in range(len(bs.count)):
            bins_out.append(
                {
                    "method": inp.method,
                    "case": inp.case_id,
                    "rater": rater,
                    "variant": variant,
                    "class": cls,
                    "class_index": k,
                    "bin": i,
                    "lower": float(lower[i]),
                    "upper": float(upper[i]),
                    "count": float(bs.count[i]),
                    "sum_confidence": float(bs.conf[i]),
                    "sum_accuracy": float(bs.acc[i]),
                }
            )

    # ---- case-level ("all") calibration: top-label, foreground region, class-wise, Brier, NLL
    conf, pred = cal.top_label(p)
    conf_flat, pred_flat = conf.ravel(), pred.ravel()
    idx = cal.bin_index(conf_flat, opts.n_bins)
    any_rater_fg = (raters != 0).any(axis=0).ravel()
    fg_region = (pred_flat != 0) | any_rater_fg
    order = np.argsort(conf_flat, kind="stable")
    ece_r, ece_fg_r, mce_r, ace_r, brier_r, nll_r = [], [], [], [], [], []
    class_idx = [cal.bin_index(p[k].ravel(), opts.n_bins) for k in range(k_all)]
    class_ece = np.zeros((n_raters, k_all))
    class_mce = np.zeros((n_raters, k_all))
    class_fg_ece = np.full((n_raters, k_all), np.nan)
    class_region = [None] + [((pred_flat == k) | (raters == k).any(axis=0).ravel()) for k in range(1, k_all)]
    for r in range(n_raters):
        lab = raters[r].ravel()
        correct = pred_flat == lab
        bs = cal.bin_sums(conf_flat, correct, opts.n_bins, index=idx)
        add_bins(bs, r, "toplabel", "all", -1)
        ece_r.append(bs.ece())
        mce_r.append(bs.mce())
        ace_r.append(cal.ace(conf_flat, correct, opts.n_bins, order=order))
        bs_fg = cal.bin_sums(conf_flat[fg_region], correct[fg_region], opts.n_bins, index=idx[fg_region])
        add_bins(bs_fg, r, "toplabel_fg", "all", -1)
        ece_fg_r.append(bs_fg.ece())
        brier_r.append(cal.brier(p, raters[r]))
        nll_r.append(cal.nll(p, raters[r]))
        for k in range(k_all):
            pk = p[k].ravel()
            yk = lab == k
            bk = cal.bin_sums(pk, yk, opts.n_bins, index=class_idx[k])
            add_bins(bk, r, "class", class_names[k], k)
            class_ece[r, k], class_mce[r, k] = bk.ece(), bk.mce()
            if k > 0:
                m = class_region[k]
                bkf = cal.bin_sums(pk[m], yk[m], opts.n_bins, index=class_idx[k][m])
                add_bins(bkf, r, "class_fg", class_names[k], k)
                class_fg_ece[r, k] = bkf.ece()
    soft = soft_labels(raters, k_all)
    all_row = {
        **base,
        "class": "all",
        "class_index": -1,
        "n_raters": n_raters,
        "ece": _nanmean(ece_r),
        "ece_fg": _nanmean(ece_fg_r),
        "mce": _nanmean(mce_r),
        "ace": _nanmean(ace_r),
        "ece_classwise": float(np.mean(class_ece)),
        "brier": float(np.mean(brier_r)),
        "brier_soft": cal.brier(p, soft),
        # NLL is linear in the target: its mean over raters equals the NLL against the mean rater label
        "nll": float(np.mean(nll_r)),
    }

    # ---- per foreground class
    rows = []
    for k in range(1, k_all):
        cons = consensus(raters, k)
        seg_k = seg == k
        n_fg = int(np.count_nonzero(cons.foreground))
        n_dis = int(np.count_nonzero(cons.dissensus))
        n_union = n_fg + n_dis
        per_rater = [dice(seg_k, raters[r] == k) for r in range(n_raters)]
        vols = rater_volumes(raters, k, voxel_ml)
        mu, sigma = crps_mod.fit_gaussian(vols)
        v_pred = float(p[k].sum()) * voxel_ml
        row = {
            **base,
            "class": class_names[k],
            "class_index": k,
            "n_raters": n_raters,
            "consensus_voxels": n_fg,
            "dissensus_voxels": n_dis,
            "union_voxels": n_union,
            "consensus_ratio": (n_fg / n_union) if n_union else float("nan"),
            "dissensus_fraction": cons.dissensus_fraction(),
            "dice_consensus": consensus_dice(seg_k, cons),
            "dice_consensus_curvas": curvas2024_rowwise_dice(seg_k & ~cons.dissensus, cons.foreground),
            "dice_rater_mean": float(np.mean(per_rater)),
            "dice_rater_min": float(np.min(per_rater)),
            "dice_rater_max": float(np.max(per_rater)),
            "dice_majority": dice(seg_k, majority_vote(raters, k)),
            "soft_dice_mean_rater": soft_dice(p[k], rater_fraction(raters, k)),
            "confidence": challenge_confidence(p[k], cons),
            "ece_class": float(np.mean(class_ece[:, k])),
            "ece_class_fg": _nanmean(class_fg_ece[:, k]),
            "mce_class": _nanmean(class_mce[:, k]),
            "brier_class": float(np.mean([cal.binary_brier(p[k], raters[r] == k) for r in range(n_raters)])),
            "brier_class_soft": cal.binary_brier(p[k], soft[k]),
            "volume_pred_ml": v_pred,
            "volume_seg_ml": float(np.count_nonzero(seg_k)) * voxel_ml,
            "volume_rater_mean_ml": mu,
            "volume_rater_std_ml": sigma,
        }
        for mode in opts.crps_modes:
            if mode == "gaussian":
                row[crps_column(mode)] = crps_mod.crps_gaussian(v_pred, mu, sigma)
            elif mode == "curvas":
                row[crps_column(mode)] = crps_mod.crps_curvas(v_pred, mu, sigma)
            else:
                row[crps_column(mode)] = crps_mod.crps_ensemble(vols, sv[:, k])
        rows.append(row)
    rows.append(all_row)
    return rows, bins_out


def _nanmean(values: Sequence[float] | np.ndarray) -> float:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def pooled_calibration(bins: pd.DataFrame) -> pd.DataFrame:
    """Dataset-level calibration from per-bin sums (any number of cases and shards, concatenated).

    Sums the bins over cases per (method, variant, class, rater), computes ECE (and MCE for the plain variants)
    per rater and averages over raters. Returns columns ``method, class, metric, pooled``; metric names as in
    ``metrics.csv`` (``ece``, ``mce``, ``ece_fg``, ``ece_class``, ``mce_class``, ``ece_class_fg``) plus
    ``ece_classwise`` (mean of the pooled class-wise ECE over all classes, background included).
    """
    if bins.empty:
        return pd.DataFrame(columns=["method", "class", "metric", "pooled"])
    g = bins.groupby(["method", "variant", "class", "class_index", "rater", "bin"], sort=True)[
        ["count", "sum_confidence", "sum_accuracy"]
    ].sum()
    out = []
    for (method, variant, cls, k), sub in g.groupby(level=["method", "variant", "class", "class_index"]):
        eces, mces = [], []
        for _, rb in sub.groupby(level="rater"):
            bs = cal.BinSums(
                rb["count"].to_numpy(), rb["sum_confidence"].to_numpy(), rb["sum_accuracy"].to_numpy()
            )
            eces.append(bs.ece())
            mces.append(bs.mce())
        ece_name, mce_name = VARIANTS[variant]
        out.append({"method": method, "class": cls, "class_index": k, "metric": ece_name, "pooled": _nanmean(eces)})
        if mce_name:
            out.append({"method": method, "class": cls, "class_index": k, "metric": mce_name, "pooled": _nanmean(mces)})
    df = pd.DataFrame(out)
    cw = (
        df[df["metric"] == "ece_class"]
        .groupby("method")["pooled"]
        .mean()
        .rename("pooled")
        .reset_index()
        .assign(**{"class": "all", "class_index": -1, "metric": "ece_classwise"})
    )
    # class-wise variants of the background are part of ece_classwise only, not a reported class row
    df = df[~((df["metric"].isin(["ece_class", "mce_class"])) & (df["class_index"] == 0))]
    return pd.concat([df, cw], ignore_index=True)[["method", "class", "metric", "pooled"]]


def summarize(rows: pd.DataFrame, bins: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean, std (ddof 1), median and count over cases per method, class and metric; plus the pooled
    dataset-level value for the calibration metrics when ``bins`` are given.

    Columns: ``method, class, metric, n, mean, std, median, pooled``.
    """
    skip = {"case", "method", "class", "class_index"}
    metrics = [c for c in rows.columns if c not in skip]
    long = rows.melt(id_vars=["method", "class"], value_vars=metrics, var_name="metric").dropna(subset=["value"])
    long["value"] = long["value"].astype(float)
    order = {m: i for i, m in enumerate(metrics)}
    summ = (
        long.groupby(["method", "class", "metric"], sort=False)["value"]
        .agg(n="count", mean="mean", std="std", median="median")
        .reset_index()
    )
    if bins is not None and not bins.empty:
        summ = summ.merge(pooled_calibration(bins), on=["method", "class", "metric"], how="left")
    else:
        summ["pooled"] = np.nan
    class_order = {c: i for i, c in enumerate(dict.fromkeys(rows["class"]))}
    summ = summ.sort_values(
        ["method", "class", "metric"],
        key=lambda s: s.map(class_order) if s.name == "class" else (s.map(order) if s.name == "metric" else s),
    )
    return summ.reset_index(drop=True)[["method", "class", "metric", "n", "mean", "std", "median", "pooled"]]


def summary_json(summary: pd.DataFrame) -> dict:
    """``{method: {class: {metric: {n, mean, std, median[, pooled]}}}}`` with NaN as null."""
    out: dict = {}
    for rec in summary.to_dict("records"):
        d = {k: _json_num(rec[k]) for k in ("n", "mean", "std", "median")}
        if rec.get("pooled") is not None and np.isfinite(rec["pooled"]):
            d["pooled"] = float(rec["pooled"])
        out.setdefault(rec["method"], {}).setdefault(rec["class"], {})[rec["metric"]] = d
    return out


def _json_num(v: object) -> float | int | None:
    if v is None:
        return None
    f = float(v)  # type: ignore[arg-type]
    if not np.isfinite(f):
        return None
    return int(f) if isinstance(v, (int, np.integer)) else f
