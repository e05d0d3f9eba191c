"""Dice coefficients: hard (binary masks), per class, and soft (probabilities against soft labels).

Conventions (DESIGN.md section 5): Dice is computed on the whole array (volumetric, not per slice); when both masks
are empty it is 1.0, when only one is empty it is 0.0.
"""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice ``2 |A & B| / (|A| + |B|)`` of two boolean masks of the same shape; 1.0 when both are empty."""
    a = np.asarray(pred, dtype=bool)
    b = np.asarray(ref, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"prediction {a.shape} and reference {b.shape} differ in shape")
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / (sa + sb)


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
    denom = float(p.sum() + q.sum())
    if denom == 0.0:
        return 1.0
    return 2.0 * float(np.sum(p * q)) / denom
