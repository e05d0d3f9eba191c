"""Agreement features from streamed counts equal their brute-force definitions on the stacked samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.agreement import agreement_features, shape_features


def _samples(T: int, K: int, shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn((1, K, *shape), generator=g, dtype=torch.float64) * 2
    noise = torch.randn((T, K, *shape), generator=g, dtype=torch.float64)
    return torch.log_softmax(base + noise, dim=1)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    den = a.sum() + b.sum()
    return 1.0 if den == 0 else 2.0 * np.logical_and(a, b).sum() / den


@pytest.mark.parametrize(("K", "shape"), [(2, (17, 23)), (3, (4, 9, 11))])
def test_agreement_equals_brute_force(K: int, shape) -> None:
    T, spacing = 6, tuple(0.5 + i for i in range(len(shape)))
    logp = _samples(T, K, shape, seed=K)
    seg = torch.randn((K, *shape), generator=torch.Generator().manual_seed(9)).argmax(0).numpy()
    acc = SampleAccumulator(K, shape, T, spacing, sum_dtype=torch.float64, segmentation=seg)
    # uneven sample groups and two regions, in reverse order
    half = shape[0] // 2
    regions = [(slice(0, half),), (slice(half, shape[0]),)]
    for (idx,) in reversed(regions):
        for a, b in [(3, 6), (0, 3)]:
            acc.add(logp[(slice(a, b), slice(None), idx)], a, (idx,) + tuple(slice(None) for _ in shape[1:]))
    res = acc.result()

    labels = logp.numpy().argmax(1)  # (T, *shape)
    for k in range(K):
        np.testing.assert_array_equal(res.votes[k], (labels == k).sum(0))
    ml = float(np.prod(spacing)) / 1000
    for t in range(T):
        for k in range(K):
            assert res.overlap_volumes[t, k] == pytest.approx(np.sum((labels[t] == k) & (seg == k)) * ml, rel=1e-12)

    fg = labels > 0
    seg_fg = seg > 0
    pbar_fg = 1.0 - logp.exp().numpy()[:, 0].mean(0)
    feats = agreement_features(res.votes, T, res.volumes, res.overlap_volumes, seg, ml, pbar_fg)
    assert feats["iou_samples"] == pytest.approx(fg.all(0).sum() / fg.any(0).sum(), rel=1e-12)
    pairs = [(t, s) for t, s in itertools.permutations(range(T), 2)]
    pooled = sum(2 * np.logical_and(fg[t], fg[s]).sum() for t, s in pairs) / sum(
        fg[t].sum() + fg[s].sum() for t, s in pairs
    )
    assert feats["pairwise_dice"] == pytest.approx(pooled, rel=1e-12)
    if K == 2:  # foreground overlap = class-1 overlap; for K > 2 the per-class overlaps are summed (documented)
        ref = np.mean([_dice(fg[t], seg_fg) for t in range(T)])
        assert feats["dice_to_final"] == pytest.approx(ref, rel=1e-12)
    else:
        inter = [sum(np.sum((labels[t] == k) & (seg == k)) for k in range(1, K)) for t in range(T)]
        ref = np.mean([2 * i / (fg[t].sum() + seg_fg.sum()) for t, i in enumerate(inter)])
        assert feats["dice_to_final"] == pytest.approx(ref, rel=1e-12)
    soft = 2 * (pbar_fg * seg_fg).sum() / (pbar_fg.sum() + seg_fg.sum())
    assert feats["soft_dice"] == pytest.approx(soft, rel=1e-12)
    f = fg.mean(0)[fg.any(0)]
    h = -(f * np.log(f) + np.where(f < 1, (1 - f) * np.log(np.where(f < 1, 1 - f, 1)), 0))
    assert feats["vote_entropy"] == pytest.approx(h.mean(), rel=1e-12)


def test_agreement_perfect_and_empty() -> None:
    T, shape = 4, (8, 8)
    seg = np.zeros(shape, np.uint8)
    seg[2:5, 2:6] = 1
    votes = np.stack([T * (1 - seg), T * seg]).astype(np.uint16)
    vols = np.tile([[64 - 12, 12]], (T, 1)).astype(float)
    ov = np.tile([[64 - 12, 12]], (T, 1)).astype(float)
    f = agreement_features(votes, T, vols, ov, seg, 1.0, seg.astype(float))
    assert f == {"iou_samples": 1.0, "pairwise_dice": 1.0, "dice_to_final": 1.0, "soft_dice": 1.0,
                 "vote_entropy": 0.0}
    empty = np.zeros(shape, np.uint8)
    votes = np.stack([np.full(shape, T), np.zeros(shape)]).astype(np.uint16)
    vols = np.tile([[64.0, 0.0]], (T, 1))
    f = agreement_features(votes, T, vols, vols * 0, empty, 1.0, np.zeros(shape))
    assert f["iou_samples"] == 1.0 and f["pairwise_dice"] == 1.0 and f["dice_to_final"] == 1.0
    assert f["soft_dice"] == 1.0 and f["vote_entropy"] == 0.0


def test_shape_features_against_scipy() -> None:
    seg = np.zeros((10, 12), np.uint8)
    seg[0:4, 3:7] = 1  # touches the top edge
    seg[6:8, 8:10] = 2  # a second component
    f = shape_features(seg)
    assert f["components"] == ndimage.label(seg > 0)[1] == 2
    assert f["area_fraction"] == pytest.approx((16 + 4) / 120)
    # contour: foreground voxels with a background 4-neighbour or on the edge; 4 of them lie on the top edge
    fg = seg > 0
    pad = np.pad(fg, 1, constant_values=False)
    nb_bg = ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    contour = fg & nb_bg
    assert f["border_fraction"] == pytest.approx(4 / contour.sum())
    assert shape_features(np.zeros((5, 5)))["components"] == 0.0
