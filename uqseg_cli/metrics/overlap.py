"""Segmentation quality of one case against its reference: the regression targets and the correlation metrics.

Dice and IoU follow DESIGN §5 per foreground class (both empty = 1.0, reference empty and prediction not = 0.0) and
are averaged over the foreground classes ``1..K-1``; the 95 % Hausdorff distance (mm) is computed on the union of
the foreground classes (``label > 0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uqseg_cli.metrics.surface import hd95

TARGETS = ("dice", "iou")


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
    dice = np.empty(k - 1)
    iou = np.empty(k - 1)
    for c in range(1, k):
        p, r = seg == c, ref == c
        inter = int(np.count_nonzero(p & r))
        sp, sr = int(np.count_nonzero(p)), int(np.count_nonzero(r))
        if sp + sr == 0:
            dice[c - 1] = iou[c - 1] = 1.0
        else:
            dice[c - 1] = 2.0 * inter / (sp + sr)
            iou[c - 1] = inter / (sp + sr - inter)
    return dice, iou


def segmentation_quality(
    seg: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """``{"dice", "iou", "hd95"}`` of one case: mean foreground Dice/IoU and HD95 (mm) of ``seg > 0`` vs ``ref > 0``."""
    dice, iou = overlap_per_class(seg, ref, num_classes)
    return {
        "dice": float(dice.mean()),
        "iou": float(iou.mean()),
        "hd95": hd95(np.asarray(seg) > 0, np.asarray(ref) > 0, spacing),
    }
