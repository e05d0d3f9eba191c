"""Quality regression on aggregated features (``--framework features``) and the best-single-feature baseline.

Two models, both fitted with scikit-learn and then *exported to plain arrays* so that they are saved in
``quality.pt`` (``torch.load(weights_only=True)``) and predict without scikit-learn objects:

- ``linear``: median imputation → standardisation → ridge regression with the penalty chosen by leave-one-out
  (``RidgeCV``);
- ``forest``: median imputation → random forest (200 trees, ``min_samples_leaf=3``), predicted by walking the
  exported trees (identical to scikit-learn's ``predict``);
- ``boost``: median imputation → gradient-boosted trees (Huber loss, 300 trees of depth 3, learning rate 0.05,
  subsample 0.8), exported the same way (initial value + learning rate × Σ tree values).

Predictions are clipped to [0, 1]. ``X`` is ``(n_cases, n_features)`` float with ``nan`` for missing values.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from uqseg_cli.metrics.regression import pearson

FEATURE_MODELS = ("linear", "forest")
ALL_FEATURE_MODELS = ("linear", "forest", "boost")


def _medians(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan column: its median is nan, replaced by 0
        med = np.nanmedian(np.asarray(x, dtype=np.float64), axis=0)
    return np.where(np.isfinite(med), med, 0.0)


def _impute(x: np.ndarray, med: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(x), x, med)


def fit_linear(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Fit the linear model; returns its arrays ``median, mean, scale, coef, intercept`` (and ``alpha``)."""
    from sklearn.linear_model import RidgeCV

    med = _medians(x)
    xi = _impute(x, med)
    mean = xi.mean(axis=0)
    scale = xi.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit((xi - mean) / scale, y)
    return {
        "median": med,
        "mean": mean,
        "scale": scale,
        "coef": np.asarray(model.coef_, dtype=np.float64),
        "intercept": np.array([float(model.intercept_)]),
        "alpha": np.array([float(model.alpha_)]),
    }


def predict_linear(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Predictions ``(n_cases,)`` of an exported linear model, clipped to [0, 1]."""
    xi = _impute(x, np.asarray(state["median"]))
    z = (xi - np.asarray(state["mean"])) / np.asarray(state["scale"])
    return np.clip(z @ np.asarray(state["coef"]) + float(np.asarray(state["intercept"])[0]), 0.0, 1.0)


def fit_forest(x: np.ndarray, y: np.ndarray, seed: int = 0, n_estimators: int = 200) -> dict[str, np.ndarray]:
    """Fit the random forest and export every tree as flat arrays (concatenated, with per-tree offsets)."""
    from sklearn.ensemble import RandomForestRegressor

    med = _medians(x)
    xi = _impute(x, med)
    rf = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=3, random_state=seed, n_jobs=1)
    rf.fit(xi, y)
    return export_forest(rf, med)


def export_forest(rf, median: np.ndarray) -> dict[str, np.ndarray]:
    """Flat arrays of a fitted ``RandomForestRegressor``: children (global node indices, -1 at leaves), split
    feature and threshold, leaf values, and the root index of every tree."""
    left, right, feat, thr, val, roots = [], [], [], [], [], []
    offset = 0
    for est in rf.estimators_:
        t = est.tree_
        n = t.node_count
        roots.append(offset)
        cl = t.children_left.astype(np.int64)
        cr = t.children_right.astype(np.int64)
        left.append(np.where(cl >= 0, cl + offset, -1))
        right.append(np.where(cr >= 0, cr + offset, -1))
        feat.append(t.feature.astype(np.int64))
        thr.append(t.threshold.astype(np.float64))
        val.append(t.value.reshape(n, -1)[:, 0].astype(np.float64))
        offset += n
    return {
        "median": np.asarray(median, dtype=np.float64),
        "left": np.concatenate(left),
        "right": np.concatenate(right),
        "feature": np.concatenate(feat),
        "threshold": np.concatenate(thr),
        "value": np.concatenate(val),
        "roots": np.asarray(roots, dtype=np.int64),
    }


def fit_boost(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Fit gradient-boosted trees (Huber loss) and export them like the forest, with ``init`` and ``scale``."""
    from sklearn.ensemble import GradientBoostingRegressor

    med = _medians(x)
    gb = GradientBoostingRegressor(
        loss="huber", n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8, min_samples_leaf=5,
        random_state=seed,
    ).fit(_impute(x, med), y)

    class _Trees:  # export_forest walks ``estimators_`` of single trees
        estimators_ = [e[0] for e in gb.estimators_]

    st = export_forest(_Trees, med)
    st["init"] = np.array([float(np.asarray(gb.init_.constant_).reshape(-1)[0])])
    st["scale"] = np.array([float(gb.learning_rate)])
    return st


def _tree_sum(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Σ over the exported trees of each row's leaf value (features compared in float32, as scikit-learn)."""
    xi = _impute(x, np.asarray(state["median"])).astype(np.float32).astype(np.float64)
    left, right = np.asarray(state["left"]), np.asarray(state["right"])
    feat, thr, val = np.asarray(state["feature"]), np.asarray(state["threshold"]), np.asarray(state["value"])
    rows = np.arange(xi.shape[0])
    total = np.zeros(xi.shape[0])
    for root in np.asarray(state["roots"]):
        node = np.full(xi.shape[0], int(root), dtype=np.int64)
        while True:
            inner = left[node] >= 0
            if not inner.any():
                break
            f = np.where(inner, feat[node], 0)
            go_left = xi[rows, f] <= thr[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        total += val[node]
    return total


def predict_forest(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Mean over the exported trees (as scikit-learn: features compared in float32), clipped to [0, 1];
    a boosted model (``init``/``scale`` in ``state``) predicts ``init + scale · Σ trees``."""
    total = _tree_sum(state, x)
    if "init" in state:
        raw = float(np.asarray(state["init"])[0]) + float(np.asarray(state["scale"])[0]) * total
        return np.clip(raw, 0.0, 1.0)
    return np.clip(total / len(state["roots"]), 0.0, 1.0)


def fit_feature_model(kind: str, x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    if kind == "linear":
        return fit_linear(x, y)
    if kind == "forest":
        return fit_forest(x, y, seed=seed)
    if kind == "boost":
        return fit_boost(x, y, seed=seed)
    raise ValueError(f"feature model must be one of {ALL_FEATURE_MODELS}, got {kind!r}")


def predict_feature_model(kind: str, state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return predict_linear(state, x) if kind == "linear" else predict_forest(state, x)


# ----------------------------------------------------------------------------------------------------------------
# baseline: the single best feature


def best_feature(x: np.ndarray, y: np.ndarray) -> int:
    """Index of the column with the largest |Pearson| with ``y`` over the cases where it is defined."""
    best, best_r = 0, -1.0
    for j in range(x.shape[1]):
        ok = np.isfinite(x[:, j])
        r = pearson(x[ok, j], y[ok]) if ok.sum() >= 3 else math.nan
        if math.isfinite(r) and abs(r) > best_r:
            best, best_r = j, abs(r)
    return best


def fit_baseline(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Pick the best single feature on these cases and fit ``y ≈ a + b · feature`` by least squares."""
    j = best_feature(x, y)
    med = _medians(x[:, [j]])
    f = _impute(x[:, [j]], med)[:, 0]
    if np.ptp(f) > 0:
        b, a = np.polyfit(f, y, 1)
    else:
        b, a = 0.0, float(np.mean(y))
    return {"feature": np.array([j]), "median": med, "coef": np.array([b, a])}


def predict_baseline(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    j = int(np.asarray(state["feature"])[0])
    f = _impute(x[:, [j]], np.asarray(state["median"]))[:, 0]
    b, a = np.asarray(state["coef"])
    return np.clip(a + b * f, 0.0, 1.0)
