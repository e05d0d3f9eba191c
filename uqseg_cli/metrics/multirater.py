"""Multi-rater references: consensus / dissensus regions, majority vote, mean rater mask, the CURVAS confidence,
rater volumes, and the CURVAS 2024 challenge's own conventions (in-plane crop, row-wise Dice).

Raters are integer label maps stacked as ``(R, *spatial)``. For a class ``k``:

- consensus foreground: every rater says ``k``;
- consensus background: no rater says ``k``;
- dissensus: the rest (some raters say ``k``, some do not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uqseg_cli.metrics.overlap import dice, dice_from_counts


@dataclass(frozen=True)
class Consensus:
    """Consensus regions of one class; each a bool array ``(*spatial)``."""

    foreground: np.ndarray
    background: np.ndarray
    dissensus: np.ndarray

    @property
    def union(self) -> np.ndarray:
        """Voxels where at least one rater says the class."""
        return ~self.background

    def dissensus_fraction(self) -> float:
        """``|dissensus| / |any rater says the class|``; 0.0 when no rater marks the class."""
        u = int(np.count_nonzero(self.union))
        return 0.0 if u == 0 else int(np.count_nonzero(self.dissensus)) / u


def consensus(raters: np.ndarray, k: int) -> Consensus:
    """Consensus foreground, consensus background and dissensus of class ``k`` among rater labels ``(R, *spatial)``."""
    r = np.asarray(raters)
    if r.ndim < 2:
        raise ValueError(f"raters must be (R, *spatial), got shape {r.shape}")
    votes = r == k
    fg = votes.all(axis=0)
    bg = ~votes.any(axis=0)
    return Consensus(fg, bg, ~(fg | bg))


def rater_fraction(raters: np.ndarray, k: int) -> np.ndarray:
    """Fraction of raters choosing class ``k`` per voxel (the mean rater mask), ``(*spatial)`` float64 in [0, 1]."""
    return (np.asarray(raters) == k).mean(axis=0, dtype=np.float64)


def soft_labels(raters: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean rater label distribution ``(K, *spatial)``: fraction of raters choosing each class."""
    return np.stack([rater_fraction(raters, k) for k in range(num_classes)])


def majority_vote(raters: np.ndarray, k: int) -> np.ndarray:
    """Voxels where strictly more than half of the raters say ``k`` (a tie, with an even R, is not a majority)."""
    r = np.asarray(raters)
    return 2 * np.count_nonzero(r == k, axis=0) > r.shape[0]


def consensus_dice(seg_k: np.ndarray, cons: Consensus) -> float:
    """Dice of the predicted mask of a class against its consensus foreground, dissensus removed from both.

    Volumetric (whole array at once); 1.0 when both are empty after removal.
    """
    keep = ~cons.dissensus
    return dice(np.asarray(seg_k, dtype=bool) & keep, cons.foreground)


def challenge_confidence(prob_k: np.ndarray, cons: Consensus) -> float:
    """CURVAS confidence of one class: ``((1 - mean p over consensus background) + mean p over consensus fg) / 2``.

    prob_k ``(*spatial)``. A region without voxels makes its mean undefined and the result NaN (the challenge code
    gives NaN there too, with a warning).
    """
    p = np.asarray(prob_k, dtype=np.float64)
    n_fg = int(np.count_nonzero(cons.foreground))
    n_bg = int(np.count_nonzero(cons.background))
    if n_fg == 0 or n_bg == 0:
        return float("nan")
    return ((1.0 - float(p[cons.background].mean())) + float(p[cons.foreground].mean())) / 2.0


def rater_volumes(raters: np.ndarray, k: int, voxel_ml: float) -> np.ndarray:
    """Volume in ml of class ``k`` for each rater, ``(R,)`` float64 (voxel count times the voxel volume in ml)."""
    r = np.asarray(raters)
    return np.count_nonzero((r == k).reshape(r.shape[0], -1), axis=1).astype(np.float64) * voxel_ml


def voxel_volume_ml(spacing: tuple[float, ...] | np.ndarray) -> float:
    """Volume of one voxel in ml from the spacing in mm (1 ml = 1000 mm^3).

    A 2D image's spacing has two entries: its "voxel" is then a pixel of unit thickness (1 mm), so the volume in ml
    is the area in mm^2 / 1000.
    """
    s = np.asarray(spacing, dtype=np.float64).ravel()
    if s.size == 0 or np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"spacing must be positive and finite, got {tuple(s)}")
    return float(np.prod(s)) / 1000.0


def curvas_crop_box(image: np.ndarray) -> tuple[slice, slice]:
    """In-plane bounding box of ``image > 0`` as the CURVAS 2024 code crops (MONAI ``CropForeground``).

    image ``(C, *spatial)``: every axis but the last two (channels, slices) is collapsed with ``any``, so the box
    covers the last two axes only (the challenge passes a CT ``(slices, X, Y)`` whose first axis MONAI reads as
    channels). End indices are exclusive, no margin. When no voxel is > 0 the challenge code would crop to an empty
    array; here the full plane is kept instead.
    """
    img = np.asarray(image)
    if img.ndim < 2:
        raise ValueError(f"image must have at least two axes, got shape {img.shape}")
    plane = (img > 0).reshape(-1, *img.shape[-2:]).any(axis=0)
    rows = np.flatnonzero(plane.any(axis=1))
    cols = np.flatnonzero(plane.any(axis=0))
    if rows.size == 0:
        return slice(0, img.shape[-2]), slice(0, img.shape[-1])
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def curvas2024_rowwise_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """The Dice the CURVAS 2024 code actually computes through MONAI's ``DiceMetric``.

    The challenge passes a ``(slices, X, Y)`` volume where MONAI expects ``(batch, channel, spatial)``: each slice is
    a batch item, each row ``x`` a "channel", and ``include_background=False`` drops row 0. A 1D Dice is computed
    per row over ``Y``; rows whose reference is empty are ignored (``ignore_empty=True``, so false positives there
    never count); the mean is taken over rows within each slice, then over slices that have at least one counted
    row; with no counted row at all the result is 0.0.

    pred, ref: bool ``(*lead, X, Y)``; leading axes are flattened into slices (a 2D image is one slice).
    """
    inter, po, ro = curvas2024_row_counts(pred, ref)
    return curvas2024_dice_from_row_counts(inter, po, ro)


def curvas2024_row_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row counts behind :func:`curvas2024_rowwise_dice`: ``(|pred & ref|, |pred|, |ref|)`` summed over the
    last axis, each of shape ``pred.shape[:-1]`` (int64). Counts of slabs along the first axis concatenate (along
    axis 0) into the counts of the whole array."""
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape or p.ndim < 2:
        raise ValueError(f"prediction {p.shape} and reference {r.shape} must match and have >= 2 axes")
    return (p & r).sum(axis=-1, dtype=np.int64), p.sum(axis=-1, dtype=np.int64), r.sum(axis=-1, dtype=np.int64)


def curvas2024_dice_from_row_counts(inter: np.ndarray, po: np.ndarray, ro: np.ndarray) -> float:
    """:func:`curvas2024_rowwise_dice` from the per-row counts of :func:`curvas2024_row_counts` (shape
    ``(*lead, X)``)."""
    x = np.shape(ro)[-1]
    inter = np.asarray(inter, dtype=np.float64).reshape(-1, x)[:, 1:]
    po = np.asarray(po, dtype=np.float64).reshape(-1, x)[:, 1:]
    ro = np.asarray(ro, dtype=np.float64).reshape(-1, x)[:, 1:]
    valid = ro > 0  # rows with an empty reference are ignored (not counted, not 1.0)
    d = np.where(valid, dice_from_counts(inter, ro, po), 0.0)
    n_rows = valid.sum(axis=1)
    per_slice = np.divide(d.sum(axis=1), n_rows, out=np.zeros(d.shape[0]), where=n_rows > 0)
    n_slices = int(np.count_nonzero(n_rows))
    return 0.0 if n_slices == 0 else float(per_slice[n_rows > 0].sum() / n_slices)
