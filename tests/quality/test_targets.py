"""Dice / IoU targets against scikit-learn, and the empty-mask conventions of DESIGN §5."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from uqseg_cli.metrics.overlap import overlap_per_class, segmentation_quality


def test_against_sklearn_multiclass():
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 3, (16, 16))
    ref = rng.integers(0, 3, (16, 16))
    dice, iou = overlap_per_class(seg, ref, 3)
    np.testing.assert_allclose(dice, f1_score(ref.ravel(), seg.ravel(), labels=[1, 2], average=None), atol=1e-12)
    np.testing.assert_allclose(iou, jaccard_score(ref.ravel(), seg.ravel(), labels=[1, 2], average=None), atol=1e-12)
    q = segmentation_quality(seg, ref, 3, (1.0, 1.0))
    assert q["dice"] == pytest.approx(dice.mean())


def test_empty_conventions():
    z = np.zeros((4, 4), np.uint8)
    o = z.copy()
    o[1, 1] = 1
    assert overlap_per_class(z, z, 2)[0][0] == 1.0
    assert overlap_per_class(o, z, 2)[0][0] == 0.0
    assert overlap_per_class(z, o, 2)[1][0] == 0.0
