"""Dice and IoU: the one implementation of the overlap metrics, from counts, from masks and per class.

Conventions (DESIGN §5): Dice ``2 |A ∩ B| / (|A| + |B|)`` and IoU ``|A ∩ B| / (|A| + |B| - |A ∩ B|)`` are computed
on the whole array (volumetric, not per slice); when both sets are empty they are 1.0, when only one is empty 0.0.

Everything reduces to :func:`dice_from_counts` / :func:`iou_from_counts`, which take the intersection and the two
sizes as numbers (Python or NumPy scalars: a float) or arrays (elementwise: a float64 array). Sizes may be voxel
counts, volumes or sums of probabilities (soft Dice); they are non-negative, and a total ``<= 0`` counts as both
empty. The other functions only count:

- :func:`dice`, :func:`soft_dice`: two masks (bool) or two maps in [0, 1];
- :func:`dice_per_class`: every class ``0..K-1`` of two label maps;
- :func:`overlap_per_class`, :func:`mean_foreground_dice`, :func:`segmentation_quality`: the foreground classes
  ``1..K-1`` (the regression targets of ``score``, the validation Dice of ``train``); the 95 % Hausdorff distance
  (mm) of :func:`segmentation_quality` is computed on the union of the foreground classes (``label > 0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uqseg_cli.metrics.surface import hd95

TARGETS = ("dice", "iou")


def dice_from_counts(inter, size_a, size_b):
    """Dice ``2 inter / (size_a + size_b)``; 1.0 where ``size_a + size_b <= 0`` (both empty).

    Scalars give a float, arrays a float64 array (elementwise, broadcast). The operations are exactly
    ``2.0 * inter / (size_a + size_b)`` in that order, so results equal the inline formula bit for bit.
    """
    if np.ndim(inter) == 0 and np.ndim(size_a) == 0 and np.ndim(size_b) == 0:
        total = size_a + size_b
        return 1.0 if total <= 0 else float(2.0 * inter / total)
    total = np.asarray(size_a, dtype=np.float64) + np.asarray(size_b, dtype=np.float64)
    ok = total > 0
    return np.where(ok, 2.0 * np.asarray(inter, dtype=np.float64) / np.where(ok, total, 1.0), 1.0)


def iou_from_counts(inter, size_a, size_b):
    """IoU (Jaccard) ``inter / (size_a + size_b - inter)``; 1.0 where ``size_a + size_b <= 0`` (both empty).

    Scalars give a float, arrays a float64 array (elementwise, broadcast).
    """
    if np.ndim(inter) == 0 and np.ndim(size_a) == 0 and np.ndim(size_b) == 0:
        total = size_a + size_b
        return 1.0 if total <= 0 else float(inter / (total - inter))
    i = np.asarray(inter, dtype=np.float64)
    total = np.asarray(size_a, dtype=np.float64) + np.asarray(size_b, dtype=np.float64)
    ok = total > 0
    return np.where(ok, i / np.where(ok, total - i, 1.0), 1.0)


def _counts(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """``(|a & b|, |a|, |b|)`` of two bool masks as Python ints."""
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a)), int(np.count_nonzero(b))


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice ``2 |A & B| / (|A| + |B|)`` of two boolean masks of the same shape; 1.0 when both are empty."""
    a = np.asarray(pred, dtype=bool)
    b = np.asarray(ref, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"prediction {a.shape} and reference {b.shape} differ in shape")
    return dice_from_counts(*_counts(a, b))


def dice_per_class(seg: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of label maps ``(*spatial)`` for each class ``0..num_classes-1``; returns ``(num_classes,)`` float64."""
    s = np.asarray(seg)
    r = np.asarray(ref)
    return np.array([dice(s == k, r == k) for k in range(num_classes)], dtype=np.float64)


def soft_dice(prob: np.ndarray, target: np.ndarray) -> float:
    """Soft Dice ``2 sum(p q) / (sum p + sum q)`` of two maps in [0, 1] of the same shape; 1.0 when both sum to 0.

    Typical use: the predicted class probability against the mean rater mask (fraction of raters choosing the
    class). Equals :func:`dice` for binary inputs.
    """
    p = np.asarray(prob, dtype=np.float64)
    q = np.asarray(target, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"prediction {p.shape} and target {q.shape} differ in shape")
    return dice_from_counts(float(np.sum(p * q)), p.sum(), q.sum())


def overlap_per_class(seg: np.ndarray, ref: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU per foreground class.

    ``seg``, ``ref``: integer label arrays of the same spatial shape; ``num_classes`` K counts the background.
    Returns two float64 arrays of length ``K - 1`` (classes 1..K-1).
    """
    seg = np.asarray(seg)
    ref = np.asarray(ref)
    if seg.shape != ref.shape:
        raise ValueError(f"shape mismatch: segmentation {seg.shape}, reference {ref.shape}")
    k = max(int(num_classes), 2)
    dice_k = np.empty(k - 1)
    iou_k = np.empty(k - 1)
    for c in range(1, k):
        inter, sp, sr = _counts(seg == c, ref == c)
        dice_k[c - 1] = dice_from_counts(inter, sp, sr)
        iou_k[c - 1] = iou_from_counts(inter, sp, sr)
    return dice_k, iou_k


def mean_foreground_dice(seg: np.ndarray, ref: np.ndarray, num_classes: int) -> float:
    """Mean Dice over the foreground classes ``1..K-1`` of one case (``train``'s validation score)."""
    return float(overlap_per_class(seg, ref, num_classes)[0].mean())


def segmentation_quality(
    seg: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """``{"dice", "iou", "hd95"}`` of one case: mean foreground Dice/IoU and HD95 (mm) of ``seg > 0`` vs ``ref > 0``."""
    dice_k, iou_k = overlap_per_class(seg, ref, num_classes)
    return {
        "dice": float(dice_k.mean()),
        "iou": float(iou_k.mean()),
        "hd95": hd95(np.asarray(seg) > 0, np.asarray(ref) > 0, spacing),
    }
