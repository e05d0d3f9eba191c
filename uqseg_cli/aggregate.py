"""Uncertainty map → per-case scalar scores, and the combination of several measures into one score.

Regions of one case (the map ``u`` and the predicted segmentation ``seg`` share the spatial shape ``(H, W)`` or
``(D, H, W)``; the predicted foreground is ``seg > 0``, all foreground classes together):

- ``image``: mean of ``u`` over every voxel;
- ``foreground``: mean over the predicted foreground (``nan`` when it is empty);
- ``band``: mean over the boundary band, the voxels within ``band_width`` voxels (chessboard distance) of a voxel
  of the other side of the predicted foreground/background boundary — a band ``2 * band_width`` voxels thick,
  centred on the boundary; the array edge is not a boundary (``nan`` without a boundary);
- ``patchmax``: the largest mean over all fully-inside sliding windows of ``patch_size`` voxels per axis (stride 1;
  the window is clipped to the array where the array is smaller);
- ``quantile``: mean of the voxels at or above the ``quantile``-quantile of ``u`` over the whole image.

Maps are aggregated in the *uncertainty direction*: the ``confidence`` map is turned into ``1 - confidence`` so
that every score grows with uncertainty. Per case and method there are also volume scores: the predicted volume
(ml, of ``seg > 0`` with the voxel spacing in mm), and the standard deviation (ml, ``ddof=1``) and coefficient of
variation (std / mean) of the T sampled foreground volumes; where ``samples.h5`` holds vote counts, the agreement
of the sampled segmentations (measure ``agreement``: ``iou_samples``, ``pairwise_dice``, ``dice_to_final``,
``soft_dice``, ``vote_entropy``; these grow with *certainty*) and the shape of the segmentation (measure ``shape``:
``components``, ``area_fraction``, ``border_fraction``).

The combined score z-scores several features across a batch of cases, with statistics that are saved
(:class:`CombinedStats`) so that a later batch is scored on the same scale, and averages them with equal weights or
with ridge weights learned against ``1 - Dice``; higher means more uncertain in both cases.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from uqseg_cli.bayes.agreement import agreement_features, shape_features
from uqseg_cli.io.prefetch import ReadOnce

REGIONS: tuple[str, ...] = ("image", "foreground", "band", "patchmax", "quantile")
MEASURES: tuple[str, ...] = ("confidence", "entropy", "expected_entropy", "mutual_information", "epkl")
VOLUME_REGIONS: tuple[str, ...] = ("predicted_ml", "sample_std_ml", "sample_cv")
AGREEMENT_REGIONS: tuple[str, ...] = ("iou_samples", "pairwise_dice", "dice_to_final", "soft_dice", "vote_entropy")
SHAPE_REGIONS: tuple[str, ...] = ("components", "area_fraction", "border_fraction")
LONG_COLUMNS: list[str] = ["case", "method", "measure", "region", "value"]
NOT_MEASURES = {"mean_segmentation"}


@dataclass(frozen=True)
class RegionParams:
    """Options of the region scores: band half-width (voxels), patch edge (voxels), quantile in (0, 1)."""

    band_width: int = 3
    patch_size: int = 32
    quantile: float = 0.9

    def __post_init__(self) -> None:
        if self.band_width < 1:
            raise ValueError(f"band width must be >= 1 voxel, got {self.band_width}")
        if self.patch_size < 1:
            raise ValueError(f"patch size must be >= 1 voxel, got {self.patch_size}")
        if not 0.0 <= self.quantile < 1.0:
            raise ValueError(f"quantile must be in [0, 1), got {self.quantile}")


def uncertainty_direction(measure: str, u: np.ndarray) -> np.ndarray:
    """The map as float64 with uncertainty growing upwards (``1 - u`` for ``confidence``)."""
    u = np.asarray(u, dtype=np.float64)
    return 1.0 - u if measure == "confidence" else u


def boundary_band(fg: np.ndarray, width: int) -> np.ndarray:
    """Voxels within ``width`` voxels (chessboard distance) of the other side of the foreground boundary.

    ``fg``: boolean mask ``(*spatial)``. Returns a boolean mask of the same shape: background voxels within
    ``width`` of a foreground voxel, and foreground voxels within ``width`` of a background voxel. Voxels outside
    the array count as neither, so the array edge is no boundary. Empty or full ``fg`` gives an empty band.
    """
    fg = np.asarray(fg, dtype=bool)
    if not fg.any() or fg.all():
        return np.zeros_like(fg)
    st = ndimage.generate_binary_structure(fg.ndim, fg.ndim)
    outer = ndimage.binary_dilation(fg, structure=st, iterations=width, border_value=0)
    inner = ndimage.binary_dilation(~fg, structure=st, iterations=width, border_value=0)
    return (outer & ~fg) | (inner & fg)


def window_sums(u: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Sums of ``u`` over every fully-inside window of ``size`` (per axis), stride 1, by cumulative sums.

    Output shape ``(n_0 - s_0 + 1, ...)``; exact up to float64 rounding.
    """
    out = np.asarray(u, dtype=np.float64)
    for ax, s in enumerate(size):
        c = np.cumsum(out, axis=ax)
        pad = [(0, 0)] * out.ndim
        pad[ax] = (1, 0)
        c = np.pad(c, pad)
        hi = [slice(None)] * out.ndim
        lo = [slice(None)] * out.ndim
        hi[ax] = slice(s, None)
        lo[ax] = slice(None, -s)
        out = c[tuple(hi)] - c[tuple(lo)]
    return out


def patch_max_mean(u: np.ndarray, patch_size: int) -> float:
    """Largest mean over all sliding windows of ``patch_size`` voxels per axis (clipped to the array)."""
    u = np.asarray(u, dtype=np.float64)
    size = [min(int(patch_size), n) for n in u.shape]
    return float(window_sums(u, size).max() / float(np.prod(size)))


def quantile_mean(u: np.ndarray, q: float) -> float:
    """Mean of the values of ``u`` at or above its ``q``-quantile (linear interpolation, as ``np.quantile``)."""
    u = np.asarray(u, dtype=np.float64).ravel()
    thr = np.quantile(u, q)
    return float(u[u >= thr].mean())


def _masked_mean(u: np.ndarray, mask: np.ndarray) -> float:
    n = int(np.count_nonzero(mask))
    return float(u[mask].sum() / n) if n else math.nan


def region_scores(u: np.ndarray, seg: np.ndarray, params: RegionParams = RegionParams()) -> dict[str, float]:
    """Every region score of one map ``u`` (already in the uncertainty direction) given the segmentation ``seg``."""
    u = np.asarray(u, dtype=np.float64)
    seg = np.asarray(seg)
    if u.shape != seg.shape:
        raise ValueError(f"map shape {u.shape} differs from segmentation shape {seg.shape}")
    fg = seg > 0
    return {
        "image": float(u.mean()),
        "foreground": _masked_mean(u, fg),
        "band": _masked_mean(u, boundary_band(fg, params.band_width)),
        "patchmax": patch_max_mean(u, params.patch_size),
        "quantile": quantile_mean(u, params.quantile),
    }


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a binary mask in ml (voxel count × product of the spacing in mm / 1000)."""
    return float(np.count_nonzero(mask)) * float(np.prod([float(s) for s in spacing])) / 1000.0


def volume_spread(volumes: np.ndarray) -> tuple[float, float]:
    """Standard deviation (ml, ``ddof=1``) and coefficient of variation of the sampled foreground volumes.

    ``volumes``: ``(T, K)`` ml per sample and class (class 0 = background is ignored) or ``(T,)`` foreground ml.
    The CV is ``nan`` when the mean volume is 0; both are ``nan`` for ``T < 2``.
    """
    v = np.asarray(volumes, dtype=np.float64)
    fgv = v[:, 1:].sum(axis=1) if v.ndim == 2 else v.reshape(-1)
    if fgv.size < 2:
        return math.nan, math.nan
    std = float(fgv.std(ddof=1))
    mean = float(fgv.mean())
    return std, (std / mean if mean > 0 else math.nan)


def case_features(
    maps: Mapping[str, np.ndarray],
    seg: np.ndarray,
    spacing: Sequence[float],
    sample_volumes: np.ndarray | None,
    params: RegionParams = RegionParams(),
) -> list[tuple[str, str, float]]:
    """All scalar features of one case and method as ``(measure, region, value)`` rows.

    ``maps``: measure name → map ``(*spatial)`` as stored (confidence is flipped here); ``seg``: predicted labels
    ``(*spatial)``; ``spacing``: mm per axis; ``sample_volumes``: ``(T, K)`` ml per sample, or None.
    """
    rows: list[tuple[str, str, float]] = []
    for measure, u in maps.items():
        for region, value in region_scores(uncertainty_direction(measure, u), seg, params).items():
            rows.append((measure, region, value))
    rows.append(("volume", "predicted_ml", volume_ml(np.asarray(seg) > 0, spacing)))
    std, cv = volume_spread(sample_volumes) if sample_volumes is not None else (math.nan, math.nan)
    rows.append(("volume", "sample_std_ml", std))
    rows.append(("volume", "sample_cv", cv))
    return rows


def available_maps(view, method: str) -> list[str]:
    """Measure names stored for ``method`` in one case of an uncertainty file (a ``CaseView``)."""
    return [m for m in view.keys(method) if m not in NOT_MEASURES]


def features_from_case(
    view, methods: Iterable[str], measures: Iterable[str] | None, params: RegionParams = RegionParams()
) -> list[tuple[str, str, str, float]]:
    """Feature rows ``(method, measure, region, value)`` of one case of an ``uncertainty.h5`` (``CaseView``).

    Reads ``<method>/<measure>`` maps from the file, ``segmentation`` and ``spacing`` from the lineage
    (``predict.h5``) and ``<method>/volumes`` from ``samples.h5`` when present.
    """
    seg = view.get("segmentation")
    spacing = view.spacing
    rows = []
    for method in methods:
        names = list(measures) if measures is not None else available_maps(view, method)
        maps = {m: view.get(f"{method}/{m}") for m in names}
        vols = view.get(f"{method}/volumes") if view.has(f"{method}/volumes") else None
        for measure, region, value in case_features(maps, seg, spacing, vols, params):
            rows.append((method, measure, region, value))
        if vols is not None and view.has(f"{method}/votes"):
            for name, value in agreement_of_case(view, method, seg, spacing, vols).items():
                rows.append((method, "agreement", name, value))
            for name, value in shape_features(seg).items():
                rows.append((method, "shape", name, value))
    return rows


def agreement_of_case(view, method: str, seg: np.ndarray, spacing: Sequence[float], vols: np.ndarray) -> dict:
    """The agreement features (:mod:`uqseg_cli.bayes.agreement`) of one case and method of a samples lineage."""
    from uqseg_cli.bayes.accumulator import voxel_volume_ml

    T = int(vols.shape[0])
    votes = view.get(f"{method}/votes")
    ov = view.get(f"{method}/overlap_volumes") if view.has(f"{method}/overlap_volumes") else None
    mean_fg = 1.0 - view.get(f"{method}/sum_p")[0].astype(np.float64) / T if view.has(f"{method}/sum_p") else None
    return agreement_features(votes, T, vols, ov, seg, voxel_volume_ml(spacing), mean_fg)


# ----------------------------------------------------------------------------------------------------------------
# combined score


@dataclass
class CombinedStats:
    """Z-score statistics and weights of the combined score, per method.

    ``features``: the ``(measure, region)`` pairs combined (as ``"measure/region"`` strings); per method ``mean``
    and ``std`` (population, ``ddof=0``; a zero std is stored as 1) and ``weights`` aligned with ``features``.
    ``weighting`` is ``"equal"`` or ``"learned"`` (ridge on ``1 - Dice`` with penalty ``alpha``).
    """

    features: list[str]
    weighting: str = "equal"
    alpha: float = 1.0
    methods: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    n_cases: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": "uqseg-combined/1",
            "features": list(self.features),
            "weighting": self.weighting,
            "alpha": self.alpha,
            "methods": self.methods,
            "n_cases": self.n_cases,
        }

    @classmethod
    def from_json(cls, obj: dict) -> CombinedStats:
        if obj.get("format") != "uqseg-combined/1":
            raise ValueError(f"not a uqseg combined-score statistics file (format {obj.get('format')!r})")
        return cls(
            features=list(obj["features"]),
            weighting=obj["weighting"],
            alpha=float(obj.get("alpha", 1.0)),
            methods={k: {kk: [float(x) for x in vv] for kk, vv in v.items()} for k, v in obj["methods"].items()},
            n_cases={k: int(v) for k, v in obj.get("n_cases", {}).items()},
        )

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> CombinedStats:
        return cls.from_json(json.loads(Path(path).read_text()))


def zscore_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population stds (``ddof=0``) of ``x`` ``(n_cases, n_features)``, ignoring ``nan``.

    A zero or undefined std becomes 1 so that the transform stays finite.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        mean = np.nanmean(x, axis=0) if x.size else np.zeros(x.shape[1])
        std = np.nanstd(x, axis=0) if x.size else np.ones(x.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return mean, std


def zscore_apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per column; missing values (``nan``) become 0, i.e. the fitted batch mean."""
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    return np.where(np.isfinite(z), z, 0.0)


def ridge_weights(z: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge coefficients of ``y`` on the columns of ``z`` with an unpenalised intercept (closed form).

    Equals ``sklearn.linear_model.Ridge(alpha).fit(z, y).coef_``.
    """
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    zc = z - z.mean(axis=0)
    yc = y - y.mean()
    return np.linalg.solve(zc.T @ zc + alpha * np.eye(z.shape[1]), zc.T @ yc)


def fit_combined(
    x: np.ndarray,
    features: Sequence[str],
    method: str,
    stats: CombinedStats | None = None,
    dice: np.ndarray | None = None,
    weighting: str = "equal",
    alpha: float = 1.0,
) -> CombinedStats:
    """Fit (or extend) the combined-score statistics for one method from ``x`` ``(n_cases, n_features)``.

    With ``weighting="learned"``, ``dice`` (one true Dice per case, ``nan`` where unknown) gives ridge weights of
    ``1 - Dice`` on the z-scores over the cases that have a Dice; otherwise every weight is ``1 / n_features``.
    """
    if stats is None:
        stats = CombinedStats(features=list(features), weighting=weighting, alpha=alpha)
    mean, std = zscore_fit(x)
    z = zscore_apply(x, mean, std)
    if weighting == "learned":
        if dice is None:
            raise ValueError("learned weights need the true Dice of the cases")
        d = np.asarray(dice, dtype=np.float64)
        ok = np.isfinite(d)
        if ok.sum() < len(features) + 2:
            raise ValueError(
                f"learned weights for {len(features)} features need at least {len(features) + 2} cases with a "
                f"reference; method {method!r} has {int(ok.sum())}"
            )
        w = ridge_weights(z[ok], 1.0 - d[ok], alpha)
    elif weighting == "equal":
        w = np.full(len(features), 1.0 / len(features))
    else:
        raise ValueError(f"weighting must be 'equal' or 'learned', got {weighting!r}")
    stats.methods[method] = {"mean": mean.tolist(), "std": std.tolist(), "weights": w.tolist()}
    stats.n_cases[method] = int(x.shape[0])
    return stats


def apply_combined(x: np.ndarray, stats: CombinedStats, method: str) -> np.ndarray:
    """Combined score per case, ``Σ_j w_j (x_j - mean_j) / std_j``, with the saved statistics of ``method``."""
    if method not in stats.methods:
        raise KeyError(method)
    s = stats.methods[method]
    z = zscore_apply(x, np.asarray(s["mean"]), np.asarray(s["std"]))
    return z @ np.asarray(s["weights"])


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per case, one column per ``method.measure.region`` (columns sorted), from the long table."""
    if long.empty:
        return pd.DataFrame({"case": []})
    key = long["method"] + "." + long["measure"] + "." + long["region"]
    wide = long.assign(feature=key).pivot(index="case", columns="feature", values="value")
    wide = wide.reindex(sorted(wide.columns), axis=1)
    wide.columns.name = None
    return wide.reset_index()


def correlation_table(long: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman of every feature with every quality metric, over the cases that have both.

    ``long``: the long feature table; ``quality``: columns ``case`` and one per metric (e.g. ``dice, iou, hd95``).
    Returns ``method, measure, region, metric, n, pearson, spearman``, sorted by metric, then by decreasing
    ``|spearman|`` (undefined correlations last).
    """
    from uqseg_cli.metrics.regression import pearson, spearman

    metrics = [c for c in quality.columns if c != "case"]
    q = quality.set_index("case")
    rows = []
    for (method, measure, region), grp in long.groupby(["method", "measure", "region"], sort=True):
        g = grp.set_index("case")["value"]
        for metric in metrics:
            both = pd.concat([g, q[metric]], axis=1, join="inner").dropna()
            a, b = both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()
            rows.append(
                {
                    "method": method,
                    "measure": measure,
                    "region": region,
                    "metric": metric,
                    "n": int(len(both)),
                    "pearson": pearson(a, b) if len(both) >= 2 else math.nan,
                    "spearman": spearman(a, b) if len(both) >= 2 else math.nan,
                }
            )
    out = pd.DataFrame(rows, columns=["method", "measure", "region", "metric", "n", "pearson", "spearman"])
    out["_key"] = -out["spearman"].abs().fillna(-1.0)
    out = out.sort_values(["metric", "_key", "method", "measure", "region"], kind="mergesort").drop(columns="_key")
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# reading a whole uncertainty file (the edge between the store and the maths above)


def num_classes_of(view) -> int:
    """K of one case: the class axis of ``probabilities`` (read from the dataset shape only), else labels + 1."""
    if view.has("probabilities"):
        return int(view.dataset("probabilities").shape[0])
    top = int(np.asarray(view.get("segmentation")).max())
    if view.has("reference"):
        top = max(top, int(np.asarray(view.get("reference")).max()))
    return max(top + 1, 2)


def case_quality(view, with_hd95: bool = True) -> dict[str, float] | None:
    """``{"dice", "iou", "hd95"}`` of the case's segmentation against its reference, or None without one.

    ``with_hd95=False`` skips the (for large volumes costly) surface distances and reports ``hd95`` as ``nan``.
    """
    from uqseg_cli.quality.targets import overlap_per_class, segmentation_quality

    if not view.has("reference"):
        return None
    seg, ref, k = view.get("segmentation"), view.get("reference"), num_classes_of(view)
    if with_hd95:
        return segmentation_quality(seg, ref, k, view.spacing)
    dice, iou = overlap_per_class(seg, ref, k)
    return {"dice": float(dice.mean()), "iou": float(iou.mean()), "hd95": math.nan}


@dataclass
class Collected:
    """Features of a batch of cases: ``long`` (``case, method, measure, region, value``), ``quality`` (``case,
    dice, iou, hd95`` for the cases with a reference), ``train_case`` (case → segmenter saw it), ``failed``."""

    long: pd.DataFrame
    quality: pd.DataFrame
    train_case: dict[str, bool]
    failed: dict[str, str]


def collect_features(
    sf,
    case_ids: Sequence[str],
    methods: Sequence[str],
    measures: Sequence[str] | None,
    params: RegionParams = RegionParams(),
    with_quality: bool = True,
    progress=None,
    with_hd95: bool = True,
    with_features: bool = True,
) -> Collected:
    """Feature rows and quality of ``case_ids`` of an opened ``uncertainty.h5`` (``StageFile``).

    A case that cannot be read is recorded in ``failed`` (``case → one-line reason``) and skipped.
    ``with_features=False`` reads only the quality (when the features come from a table).
    """
    rows: list[tuple] = []
    qual: list[dict] = []
    train: dict[str, bool] = {}
    failed: dict[str, str] = {}
    for cid in case_ids:
        status = "ok"
        try:
            view = ReadOnce(sf.case(cid))  # segmentation & co. are read once for features and quality
            case_rows = (
                [(cid, *r) for r in features_from_case(view, methods, measures, params)] if with_features else []
            )
            q = case_quality(view, with_hd95) if with_quality else None
            train[cid] = bool(view.attr("train_case", False))
        except Exception as exc:  # one unreadable case must not stop the batch
            msg = str(exc)
            failed[cid] = msg if str(sf.path) in msg else f"{sf.path}: case {cid}: {msg}"
            status = "failed"
        else:
            rows.extend(case_rows)
            if q is not None:
                qual.append({"case": cid, **q})
        if progress is not None:
            progress.advance(cid, status)
    return Collected(
        long=pd.DataFrame(rows, columns=LONG_COLUMNS),
        quality=pd.DataFrame(qual, columns=["case", "dice", "iou", "hd95"]),
        train_case=train,
        failed=failed,
    )


def feature_matrix(long: pd.DataFrame, method: str, features: Sequence[str], cases: Sequence[str]) -> np.ndarray:
    """``(len(cases), len(features))`` values of ``method`` for ``"measure/region"`` features (``nan`` if absent)."""
    sub = long[long["method"] == method]
    key = sub["measure"] + "/" + sub["region"]
    table = sub.assign(feature=key).pivot_table(index="case", columns="feature", values="value", dropna=False)
    table = table.reindex(index=list(cases), columns=list(features))
    return table.to_numpy(dtype=np.float64)


def add_combined(
    long: pd.DataFrame,
    features: Sequence[str],
    region_label: str,
    stats: CombinedStats | None = None,
    dice: Mapping[str, float] | None = None,
    weighting: str = "equal",
    alpha: float = 1.0,
) -> tuple[pd.DataFrame, CombinedStats]:
    """Append ``measure="combined"`` rows (one per case and method) to the long table.

    With ``stats`` given, its saved z-score statistics and weights are reused as they are (a later batch on the
    same scale); otherwise they are fitted on this batch (``dice``: case → true Dice, for learned weights).
    """
    features = list(features)
    new_stats = stats is None
    if new_stats:
        stats = CombinedStats(features=features, weighting=weighting, alpha=alpha)
    elif list(stats.features) != features:
        features = list(stats.features)
    extra = []
    for method in sorted(long["method"].unique()):
        cases = sorted(long.loc[long["method"] == method, "case"].unique())
        x = feature_matrix(long, method, features, cases)
        if new_stats:
            d = np.array([dice.get(c, np.nan) if dice else np.nan for c in cases])
            fit_combined(x, features, method, stats, dice=d, weighting=weighting, alpha=alpha)
        elif method not in stats.methods:
            raise KeyError(f"the statistics have no method {method!r} (they have {', '.join(stats.methods)})")
        score = apply_combined(x, stats, method)
        extra.extend((c, method, "combined", region_label, float(v)) for c, v in zip(cases, score, strict=True))
    out = pd.concat([long, pd.DataFrame(extra, columns=LONG_COLUMNS)], ignore_index=True)
    return out, stats
