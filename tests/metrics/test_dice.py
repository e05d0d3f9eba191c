"""Dice and IoU (metrics.overlap): hand-made masks, soft Dice, from counts, empty-mask conventions (DESIGN §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.segmentation import dice_score

from uqseg_cli.metrics.overlap import dice, dice_per_class, soft_dice


def test_dice_hand_made():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 voxels
    b[:2, :3] = True  # 6 voxels, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 10)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_dice_empty_conventions():
    z = np.zeros((3, 3, 3), bool)
    one = z.copy()
    one[1, 1, 1] = True
    assert dice(z, z) == 1.0  # both empty
    assert dice(one, z) == 0.0  # reference empty, prediction not
    assert dice(z, one) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        dice(z, np.zeros((3, 3), bool))


def test_dice_per_class_against_torchmetrics():
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 3, size=(2, 16, 16))
    ref = np.where(rng.random((2, 16, 16)) < 0.7, seg, rng.integers(0, 3, size=(2, 16, 16)))
    ours = dice_per_class(seg, ref, 3)
    # torchmetrics' dice per class on the whole volume (one "batch" item holding all voxels)
    t_pred = torch.nn.functional.one_hot(torch.from_numpy(seg).reshape(1, -1), 3).permute(0, 2, 1)
    t_ref = torch.nn.functional.one_hot(torch.from_numpy(ref).reshape(1, -1), 3).permute(0, 2, 1)
    want = dice_score(t_pred, t_ref, num_classes=3, include_background=True, average="none", input_format="one-hot")
    np.testing.assert_allclose(ours, want.numpy().ravel(), atol=1e-6)


def test_soft_dice():
    p = np.array([0.5, 0.5, 0.0, 1.0])
    q = np.array([1.0, 0.0, 0.0, 1.0])
    assert soft_dice(p, q) == pytest.approx(2 * (0.5 + 1.0) / (2.0 + 2.0))
    b = np.array([1, 0, 1, 1], dtype=float)
    c = np.array([1, 1, 0, 1], dtype=float)
    assert soft_dice(b, c) == pytest.approx(dice(b > 0, c > 0))
    assert soft_dice(np.zeros(3), np.zeros(3)) == 1.0


def test_counts_scalars_and_arrays():
    from uqseg_cli.metrics.overlap import dice_from_counts, iou_from_counts

    assert dice_from_counts(0, 0, 0) == 1.0 and iou_from_counts(0, 0, 0) == 1.0  # both empty
    assert dice_from_counts(0, 3, 0) == 0.0 and iou_from_counts(0, 0, 3) == 0.0  # one empty
    assert dice_from_counts(4, 4, 6) == 2.0 * 4 / 10 and iou_from_counts(4, 4, 6) == 4 / 6
    assert isinstance(dice_from_counts(np.int64(2), np.int64(3), np.int64(5)), float)
    rng = np.random.default_rng(1)
    a = rng.integers(0, 50, 200).astype(np.float64)
    b = rng.integers(0, 50, 200).astype(np.float64)
    inter = np.minimum(a, b) * rng.random(200)
    a[:5] = b[:5] = inter[:5] = 0.0
    d = dice_from_counts(inter, a, b)
    j = iou_from_counts(inter, a, b)
    np.testing.assert_array_equal(d[:5], 1.0)
    np.testing.assert_array_equal(j[:5], 1.0)
    # the same operations as the inline formulas, bit for bit, and the same values as the scalar form
    np.testing.assert_array_equal(d[5:], 2.0 * inter[5:] / (a[5:] + b[5:]))
    np.testing.assert_array_equal(j[5:], inter[5:] / (a[5:] + b[5:] - inter[5:]))
    assert [dice_from_counts(*t) for t in zip(inter, a, b, strict=True)] == d.tolist()
    # broadcasting a scalar size (dice of every sample against one final segmentation)
    np.testing.assert_array_equal(dice_from_counts(inter, a, 7.0), np.where(a + 7.0 > 0, 2.0 * inter / (a + 7.0), 1))


def test_per_class_dice_is_one_source():
    from uqseg_cli.metrics.overlap import mean_foreground_dice, overlap_per_class

    rng = np.random.default_rng(2)
    seg = rng.integers(0, 4, (9, 11))
    ref = np.where(rng.random((9, 11)) < 0.6, seg, rng.integers(0, 4, (9, 11)))
    d, _ = overlap_per_class(seg, ref, 4)
    np.testing.assert_array_equal(d, dice_per_class(seg, ref, 4)[1:])
    assert mean_foreground_dice(seg, ref, 4) == float(dice_per_class(seg, ref, 4)[1:].mean())
