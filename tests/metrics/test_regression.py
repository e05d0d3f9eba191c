"""Regression metrics against scipy / scikit-learn and brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error
from sklearn.metrics import r2_score as sk_r2

from uqseg_cli.metrics.regression import aurc, mae, pearson, r2_score, rankdata, regression_summary, spearman


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.uniform(0.5, 1.0, 57)
    p = y + rng.normal(0, 0.05, 57)
    return y, p


def test_against_scipy_sklearn(data):
    y, p = data
    assert r2_score(y, p) == pytest.approx(sk_r2(y, p), abs=1e-12)
    assert pearson(y, p) == pytest.approx(stats.pearsonr(y, p).statistic, abs=1e-12)
    assert spearman(y, p) == pytest.approx(stats.spearmanr(y, p).statistic, abs=1e-12)
    assert mae(y, p) == pytest.approx(mean_absolute_error(y, p), abs=1e-15)


def test_ties_match_scipy():
    x = np.array([1, 2, 2, 3, 3, 3, 0, 5, 5], dtype=float)
    y = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5], dtype=float)
    np.testing.assert_array_equal(rankdata(x), stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_r2_negative_and_exact():
    y = np.array([1.0, 2.0, 3.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.array([3.0, 2.0, 1.0])) == pytest.approx(1 - 8 / 2)  # SSres 8, SStot 2


def test_degenerate_nan():
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(r2_score([2, 2], [1, 3]))
    assert math.isnan(spearman([1], [2]))
    assert math.isnan(mae([], []))


def test_aurc_brute_force():
    conf = np.array([0.9, 0.1, 0.5, 0.7])
    loss = np.array([0.0, 1.0, 0.5, 0.2])
    # accepted order: 0.9 (0.0), 0.7 (0.2), 0.5 (0.5), 0.1 (1.0)
    risks = [0.0, 0.2 / 2, 0.7 / 3, 1.7 / 4]
    assert aurc(conf, loss) == pytest.approx(np.mean(risks), abs=1e-15)
    # a perfect ranking (confidence = -loss) has the lowest AURC of all orderings, the reversed one the highest
    rng = np.random.default_rng(3)
    lo = rng.random(12)
    others = [aurc(rng.random(12), lo) for _ in range(50)]
    assert aurc(-lo, lo) <= min(others) and aurc(lo, lo) >= max(others)


def test_summary_threshold():
    y = np.array([0.95, 0.6, 0.9, 0.5])
    p = np.array([0.9, 0.7, 0.8, 0.75])
    s = regression_summary(y, p, failure_threshold=0.8)
    fail = (y < 0.8).astype(float)
    assert s["aurc"] == pytest.approx(aurc(p, fail))
    assert s["n"] == 4
    s2 = regression_summary(y, p)
    assert s2["aurc"] == pytest.approx(aurc(p, 1 - y))


def test_length_mismatch():
    with pytest.raises(ValueError, match="length mismatch"):
        pearson([1, 2], [1, 2, 3])


def test_non_finite_nan():
    """A missing value gives nan (before: Pearson clipped nan to 1.0 and Spearman ranked nan last)."""
    y = [0.1, 0.5, np.nan, 0.9]
    p = [0.2, 0.4, 0.6, 0.8]
    for f in (pearson, spearman, r2_score):
        assert math.isnan(f(y, p)) and math.isnan(f(p, y))
    assert math.isnan(r2_score([0.1, 0.2], [0.1, np.inf]))
