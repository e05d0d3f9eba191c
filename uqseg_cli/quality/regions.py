"""Uncertainty map → per-case scalar scores (the features `aggregate` writes).

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

The combination of several features into one score is in :mod:`uqseg_cli.quality.combined`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from uqseg_cli.bayes.agreement import agreement_features, shape_features
from uqseg_cli.io.prefetch import ReadOnce

REGIONS: tuple[str, ...] = ("image", "foreground", "band", "patchmax", "quantile")
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
    from uqseg_cli.metrics.overlap import overlap_per_class, segmentation_quality

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
