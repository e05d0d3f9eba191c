"""Feature regressors exported to arrays predict exactly as scikit-learn; cross-fitting never sees its own label."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from uqseg_cli.quality.crossfit import assign_folds, cross_fit
from uqseg_cli.quality.features import (
    best_feature,
    export_forest,
    fit_baseline,
    fit_feature_model,
    fit_forest,
    fit_linear,
    predict_baseline,
    predict_feature_model,
    predict_forest,
    predict_linear,
)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = np.clip(0.8 - 0.1 * x[:, 2] + 0.05 * np.tanh(x[:, 0]) + 0.01 * rng.normal(size=60), 0, 1)
    x[3, 1] = np.nan  # a missing value
    return x, y


def test_linear_matches_sklearn_pipeline(data):
    x, y = data
    state = fit_linear(x, y)
    ref = make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))
    ).fit(x, y)
    np.testing.assert_allclose(predict_linear(state, x), np.clip(ref.predict(x), 0, 1), atol=1e-10)


def test_forest_export_matches_sklearn(data):
    x, y = data
    xi = SimpleImputer(strategy="median").fit_transform(x)
    rf = RandomForestRegressor(n_estimators=20, min_samples_leaf=3, random_state=1).fit(xi, y)
    state = export_forest(rf, np.nanmedian(x, axis=0))
    x_new = np.random.default_rng(9).normal(size=(40, 5))
    np.testing.assert_allclose(predict_forest(state, x_new), np.clip(rf.predict(x_new), 0, 1), atol=1e-12)
    # the fitted wrapper is deterministic for a seed and learns the signal
    st = fit_forest(x, y, seed=3, n_estimators=30)
    np.testing.assert_array_equal(predict_forest(st, x), predict_forest(fit_forest(x, y, seed=3, n_estimators=30), x))


def test_baseline_picks_the_informative_feature(data):
    x, y = data
    assert best_feature(x, y) == 2
    st = fit_baseline(x, y)
    slope, intercept = np.polyfit(x[:, 2], y, 1)
    np.testing.assert_allclose(predict_baseline(st, x), np.clip(intercept + slope * x[:, 2], 0, 1), atol=1e-12)


def test_folds_balanced_and_seeded():
    f = assign_folds(23, 5, seed=1)
    assert sorted(np.bincount(f).tolist()) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(f, assign_folds(23, 5, seed=1))
    with pytest.raises(ValueError):
        assign_folds(3, 5)


def test_cross_fit_never_sees_own_label(data):
    x, y = data
    folds = assign_folds(len(y), 5, seed=0)
    seen = []

    def spy(train, test, fold):
        seen.append((set(train.tolist()), set(test.tolist())))
        return np.zeros(len(test))

    cross_fit(folds, spy)
    assert len(seen) == 5
    for train, test in seen:
        assert not train & test
    assert set().union(*(t for _, t in seen)) == set(range(len(y)))

    for kind in ("linear", "forest", "baseline"):

        def fp(train, test, fold, yy, kind=kind):
            if kind == "baseline":
                return predict_baseline(fit_baseline(x[train], yy[train]), x[test])
            return predict_feature_model(kind, fit_feature_model(kind, x[train], yy[train]), x[test])

        base = cross_fit(folds, lambda tr, te, f, kind=kind: fp(tr, te, f, y))
        for i in (0, 17):
            y2 = y.copy()
            y2[i] = 1.0 - y2[i] + 5.0  # a wild label for case i only
            moved = cross_fit(folds, lambda tr, te, f, y2=y2: fp(tr, te, f, y2))
            assert moved[i] == base[i], kind  # case i's prediction ignores its own label ...
            assert not np.allclose(moved, base), kind  # ... while other folds do see it


def test_boost_export_matches_sklearn(data):
    from sklearn.ensemble import GradientBoostingRegressor

    from uqseg_cli.quality.features import fit_boost

    x, y = data
    st = fit_boost(x, y, seed=2)
    xi = SimpleImputer(strategy="median").fit_transform(x)
    gb = GradientBoostingRegressor(
        loss="huber", n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8, min_samples_leaf=5,
        random_state=2,
    ).fit(xi, y)
    x_new = np.random.default_rng(5).normal(size=(40, 5))
    np.testing.assert_allclose(predict_forest(st, x_new), np.clip(gb.predict(x_new), 0, 1), atol=1e-9)
