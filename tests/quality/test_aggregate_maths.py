"""Regions, band, patch-max, volumes and the combined score on hand-made arrays, against brute force."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import Ridge

from uqseg_cli.quality.combined import CombinedStats, apply_combined, fit_combined, ridge_weights
from uqseg_cli.quality.correlation import correlation_table, wide_table
from uqseg_cli.quality.regions import (
    RegionParams,
    boundary_band,
    case_features,
    patch_max_mean,
    quantile_mean,
    region_scores,
    volume_ml,
    volume_spread,
)


def _brute_band(fg: np.ndarray, width: int) -> np.ndarray:
    """Voxels whose chessboard distance to a voxel of the other class is <= width."""
    idx = np.argwhere(np.ones_like(fg))
    out = np.zeros_like(fg)
    for p in idx:
        other = np.argwhere(fg != fg[tuple(p)])
        if other.size and np.abs(other - p).max(axis=1).min() <= width:
            out[tuple(p)] = True
    return out


def test_band_hand_made():
    fg = np.zeros((7, 7), bool)
    fg[2:5, 2:5] = True
    expected = np.zeros((7, 7), bool)
    expected[1:6, 1:6] = True  # ring of background around the square ...
    expected[3, 3] = False  # ... and the square's own edge, but not its centre
    np.testing.assert_array_equal(boundary_band(fg, 1), expected)
    # width 2: the centre (distance 2 from background) joins, the outer ring grows to the array edge
    assert boundary_band(fg, 2).all()


def test_band_edge_is_not_boundary():
    fg = np.zeros((6, 6), bool)
    fg[:, :3] = True  # touches the array edge on three sides
    band = boundary_band(fg, 1)
    np.testing.assert_array_equal(band, np.isin(np.arange(6), [2, 3])[None, :].repeat(6, 0))


@pytest.mark.parametrize("width", [1, 2, 3])
def test_band_random_2d_3d(width):
    rng = np.random.default_rng(width)
    for shape in [(13, 11), (6, 7, 5)]:
        fg = rng.random(shape) > 0.6
        np.testing.assert_array_equal(boundary_band(fg, width), _brute_band(fg, width))


def test_band_empty_or_full():
    assert not boundary_band(np.zeros((4, 4), bool), 2).any()
    assert not boundary_band(np.ones((4, 4), bool), 2).any()


def test_patch_max_brute_force():
    rng = np.random.default_rng(0)
    u = rng.random((9, 12))
    p = 4
    brute = max(u[i : i + p, j : j + p].mean() for i in range(9 - p + 1) for j in range(12 - p + 1))
    assert patch_max_mean(u, p) == pytest.approx(brute, abs=1e-12)
    v = rng.random((5, 6, 7))
    brute3 = max(
        v[i : i + 3, j : j + 3, k : k + 3].mean() for i, j, k in itertools.product(range(3), range(4), range(5))
    )
    assert patch_max_mean(v, 3) == pytest.approx(brute3, abs=1e-12)
    # a patch larger than the array is clipped to it: the mean of the whole array
    assert patch_max_mean(u, 100) == pytest.approx(u.mean(), abs=1e-12)


def test_region_scores_hand_made():
    u = np.zeros((6, 6))
    u[0, 0] = 1.0  # one hot voxel far from the segmentation
    u[2:4, 2:4] = 0.5
    seg = np.zeros((6, 6), np.uint8)
    seg[2:4, 2:4] = 1
    s = region_scores(u, seg, RegionParams(band_width=1, patch_size=2, quantile=0.9))
    assert s["image"] == pytest.approx(3.0 / 36)
    assert s["foreground"] == pytest.approx(0.5)
    band = boundary_band(seg > 0, 1)  # 4x4 block around (1..4, 1..4), all of it
    assert band.sum() == 16
    assert s["band"] == pytest.approx(2.0 / 16)
    assert s["patchmax"] == pytest.approx(0.5)  # the 2x2 block of 0.5 beats the corner (1/4)
    thr = np.quantile(u, 0.9)
    assert s["quantile"] == pytest.approx(u[u >= thr].mean())
    assert quantile_mean(u, 0.0) == pytest.approx(u.mean())
    # no predicted foreground: foreground and band are undefined
    s0 = region_scores(u, np.zeros_like(seg), RegionParams(band_width=1, patch_size=2))
    assert math.isnan(s0["foreground"]) and math.isnan(s0["band"])


def test_confidence_is_flipped_and_volumes():
    conf = np.full((4, 4), 0.75)
    seg = np.zeros((4, 4), np.uint8)
    seg[:2] = 1
    vols = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])  # (T, K) ml
    rows = {(m, r): v for m, r, v in case_features({"confidence": conf}, seg, (0.5, 2.0), vols)}
    assert rows[("confidence", "image")] == pytest.approx(0.25)
    assert rows[("volume", "predicted_ml")] == pytest.approx(8 * 1.0 / 1000)
    assert rows[("volume", "sample_std_ml")] == pytest.approx(np.std([1, 2, 3], ddof=1))
    assert rows[("volume", "sample_cv")] == pytest.approx(np.std([1, 2, 3], ddof=1) / 2)
    assert volume_ml(np.ones((10, 10, 10)), (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert all(math.isnan(v) for v in volume_spread(np.array([[0.0, 1.0]])))


def test_zscore_statistics_reused_exactly(tmp_path):
    rng = np.random.default_rng(5)
    feats = ["entropy/foreground", "mutual_information/foreground", "epkl/band"]
    a = rng.normal([1, 10, 100], [1, 2, 30], size=(20, 3))
    b = rng.normal([3, 5, 50], [2, 1, 10], size=(7, 3))  # a later batch on another scale
    st = fit_combined(a, feats, "tta")
    st.save(tmp_path / "stats.json")
    back = CombinedStats.load(tmp_path / "stats.json")
    mean, std = a.mean(0), a.std(0)
    expected = ((b - mean) / std).mean(axis=1)
    np.testing.assert_allclose(apply_combined(b, back, "tta"), expected, rtol=0, atol=1e-12)
    # the later batch is NOT re-standardised: its own z-scores would differ
    assert not np.allclose(apply_combined(b, back, "tta"), ((b - b.mean(0)) / b.std(0)).mean(1))
    assert json.loads((tmp_path / "stats.json").read_text())["format"] == "uqseg-combined/1"
    with pytest.raises(KeyError):
        apply_combined(b, back, "mcdropout")


def test_learned_weights_match_sklearn_ridge():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 3))
    dice = 0.9 - 0.05 * x[:, 0] + 0.01 * rng.normal(size=30)
    st = fit_combined(x, ["a", "b", "c"], "m", dice=dice, weighting="learned", alpha=0.5)
    z = (x - x.mean(0)) / x.std(0)
    ref = Ridge(alpha=0.5).fit(z, 1 - dice).coef_
    np.testing.assert_allclose(st.methods["m"]["weights"], ref, atol=1e-10)
    np.testing.assert_allclose(ridge_weights(z, 1 - dice, 0.5), ref, atol=1e-10)
    # the combined score now tracks 1 - Dice
    assert stats.pearsonr(apply_combined(x, st, "m"), 1 - dice).statistic > 0.95
    with pytest.raises(ValueError, match="at least"):
        fit_combined(x[:3], ["a", "b", "c"], "m", dice=dice[:3], weighting="learned")


def test_wide_and_correlation_tables():
    rng = np.random.default_rng(7)
    cases = [f"c{i}" for i in range(8)]
    dice = rng.uniform(0.5, 1, 8)
    rows = []
    for i, c in enumerate(cases):
        rows.append((c, "tta", "entropy", "foreground", 1 - dice[i] + 0.1 * rng.random()))
        rows.append((c, "tta", "entropy", "image", rng.random()))
    long = pd.DataFrame(rows, columns=["case", "method", "measure", "region", "value"])
    wide = wide_table(long)
    assert list(wide.columns) == ["case", "tta.entropy.foreground", "tta.entropy.image"]
    assert wide.shape == (8, 3)
    q = pd.DataFrame({"case": cases[:7], "dice": dice[:7]})  # one case without a reference
    corr = correlation_table(long, q)
    assert corr["n"].tolist() == [7, 7]
    fg = long[long.region == "foreground"].value.to_numpy()[:7]
    top = corr.iloc[0]
    assert top["region"] == "foreground"
    assert top["pearson"] == pytest.approx(stats.pearsonr(fg, dice[:7]).statistic, abs=1e-12)
    assert top["spearman"] == pytest.approx(stats.spearmanr(fg, dice[:7]).statistic, abs=1e-12)
    assert abs(corr.iloc[0]["spearman"]) >= abs(corr.iloc[1]["spearman"])
