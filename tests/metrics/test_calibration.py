"""ECE/MCE against torchmetrics (test-only oracle), ACE against a brute-force equal-mass loop, exact merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from uqseg_cli.metrics import calibration as cal


def _probs(rng, n, k, sharp=2.0):
    logits = rng.normal(size=(k, n)) * sharp
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


@pytest.mark.parametrize("n_bins", [1, 7, 15, 50])
def test_binary_ece_mce_equal_torchmetrics(n_bins):
    rng = np.random.default_rng(n_bins)
    p = rng.random(3000)
    y = rng.random(3000) < p**1.5  # miscalibrated on purpose
    # exact 0 and 1 values (float16 storage saturates) go to the first / the extra "c == 1" bin
    p[:40] = 1.0
    p[40:60] = 0.0
    tp, ty = torch.from_numpy(p), torch.from_numpy(y.astype(np.int64))
    want_ece = binary_calibration_error(tp, ty, n_bins=n_bins, norm="l1").item()
    want_mce = binary_calibration_error(tp, ty, n_bins=n_bins, norm="max").item()
    assert cal.ece(p, y, n_bins) == pytest.approx(want_ece, abs=1e-6)
    assert cal.mce(p, y, n_bins) == pytest.approx(want_mce, abs=1e-6)


@pytest.mark.parametrize("k", [2, 4])
def test_toplabel_ece_mce_equal_torchmetrics_multiclass(k):
    rng = np.random.default_rng(k)
    probs = _probs(rng, 4000, k).astype(np.float32)
    labels = rng.integers(0, k, size=4000)
    # make a third of the voxels agree with the argmax so accuracy varies across bins
    agree = rng.random(4000) < 0.6
    labels[agree] = probs.argmax(0)[agree]
    tp, ty = torch.from_numpy(probs.T.copy()), torch.from_numpy(labels)
    for n_bins in (15, 50):
        want = multiclass_calibration_error(tp, ty, num_classes=k, n_bins=n_bins, norm="l1").item()
        want_m = multiclass_calibration_error(tp, ty, num_classes=k, n_bins=n_bins, norm="max").item()
        bs = cal.toplabel_bin_sums(probs, labels, n_bins)
        assert bs.ece() == pytest.approx(want, abs=1e-6)
        assert bs.mce() == pytest.approx(want_m, abs=1e-6)
        assert bs.total == 4000


def test_classwise_bins_are_binary_problems():
    rng = np.random.default_rng(3)
    probs = _probs(rng, 1000, 3)
    labels = rng.integers(0, 3, size=1000)
    per_class = cal.classwise_bin_sums(probs, labels, 10)
    for k, bs in enumerate(per_class):
        want = binary_calibration_error(torch.from_numpy(probs[k]), torch.from_numpy((labels == k).astype(int)), 10)
        assert bs.ece() == pytest.approx(want.item(), abs=1e-6)


def test_merged_bin_sums_equal_one_shot_value():
    rng = np.random.default_rng(7)
    probs = _probs(rng, 5000, 3)
    labels = rng.integers(0, 3, size=5000)
    whole = cal.toplabel_bin_sums(probs, labels, 15)
    cuts = [0, 700, 701, 2400, 5000]  # uneven "cases", one with a single voxel
    merged = cal.BinSums.empty(15)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        merged = merged + cal.toplabel_bin_sums(probs[:, a:b], labels[a:b], 15)
    np.testing.assert_array_equal(merged.count, whole.count)
    np.testing.assert_allclose(merged.conf, whole.conf, rtol=1e-12)
    assert merged.ece() == pytest.approx(whole.ece(), abs=1e-12)
    assert merged.mce() == pytest.approx(whole.mce(), abs=1e-12)
    # and the mean of per-case ECEs is not the dataset ECE (why the sums are stored)
    spans = list(zip(cuts[:-1], cuts[1:], strict=True))
    per_case = [cal.toplabel_bin_sums(probs[:, a:b], labels[a:b], 15).ece() for a, b in spans]
    assert abs(np.mean(per_case) - whole.ece()) > 1e-3


def test_bins_of_different_size_refuse_to_merge():
    with pytest.raises(ValueError, match="15 and 10"):
        cal.BinSums.empty(15) + cal.BinSums.empty(10)


def test_bin_index_edges_and_range():
    idx = cal.bin_index(np.array([0.0, 0.0999, 0.1, 0.5, 0.9999, 1.0]), 10)
    assert idx.tolist() == [0, 0, 1, 5, 9, 10]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cal.bin_index(np.array([0.5, 1.2]), 10)


def _ace_brute(c, a, n_bins):
    order = sorted(range(len(c)), key=lambda i: c[i])  # stable, like argsort(kind="stable")
    groups = np.array_split(np.array(order), min(n_bins, len(c)))
    total = 0.0
    for g in groups:
        total += len(g) / len(c) * abs(np.mean([a[i] for i in g]) - np.mean([c[i] for i in g]))
    return total


@pytest.mark.parametrize("n,n_bins", [(1000, 15), (37, 10), (5, 10), (64, 64)])
def test_ace_equals_brute_force_equal_mass(n, n_bins):
    rng = np.random.default_rng(n)
    c = rng.random(n)
    a = (rng.random(n) < np.sin(6 * c) ** 2).astype(float)  # non-monotone gap: ACE != ECE
    assert cal.ace(c, a, n_bins) == pytest.approx(_ace_brute(c, a, n_bins), abs=1e-12)


def test_ace_differs_from_ece_when_mass_is_uneven():
    rng = np.random.default_rng(0)
    c = np.concatenate([rng.uniform(0.9, 1.0, 900), rng.uniform(0.0, 1.0, 100)])
    a = (rng.random(1000) < np.sin(6 * c) ** 2).astype(float)
    assert abs(cal.ace(c, a, 10) - cal.ece(c, a, 10)) > 1e-3


def test_perfect_calibration_and_certain_errors():
    # confidence 1 everywhere and always wrong: ECE = MCE = 1
    assert cal.ece(np.ones(10), np.zeros(10), 15) == 1.0
    assert cal.mce(np.ones(10), np.zeros(10), 15) == 1.0
    # two bins, each exactly calibrated: 0.25 conf / 1 of 4 right; 0.75 conf / 3 of 4 right
    c = np.array([0.25] * 4 + [0.75] * 4)
    a = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=float)
    assert cal.ece(c, a, 10) == pytest.approx(0.0, abs=1e-15)
    assert np.isnan(cal.ece(np.array([]), np.array([]), 10))


def test_brier_and_nll_by_hand():
    probs = np.array([[0.8, 0.4], [0.2, 0.6]])  # (K=2, N=2)
    labels = np.array([0, 0])
    # voxel 1: (0.8-1)^2 + 0.2^2 = 0.08; voxel 2: (0.4-1)^2 + 0.6^2 = 0.72
    assert cal.brier(probs, labels) == pytest.approx(0.4)
    assert cal.nll(probs, labels) == pytest.approx(-(np.log(0.8) + np.log(0.4)) / 2)
    soft = np.array([[0.5, 1.0], [0.5, 0.0]])
    assert cal.brier(probs, soft) == pytest.approx(((0.3**2 + 0.3**2) + (0.6**2 + 0.6**2)) / 2)
    assert cal.nll(probs, soft) == pytest.approx(-(0.5 * np.log(0.8) + 0.5 * np.log(0.2) + np.log(0.4)) / 2)
    # exact zeros (float16 maps) are clamped, not -inf
    assert np.isfinite(cal.nll(np.array([[1.0], [0.0]]), np.array([1])))
    assert cal.binary_brier(np.array([0.9, 0.1]), np.array([True, True])) == pytest.approx((0.01 + 0.81) / 2)


@pytest.mark.parametrize("n_bins", [1, 3, 10, 15, 50])
def test_bin_index_equals_searchsorted_at_and_around_every_edge(n_bins):
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rng = np.random.default_rng(n_bins)
    c = np.clip(np.concatenate([rng.random(5000), edges, np.nextafter(edges, 2), np.nextafter(edges, -1)]), 0, 1)
    np.testing.assert_array_equal(cal.bin_index(c, n_bins), np.searchsorted(edges, c, side="right") - 1)
