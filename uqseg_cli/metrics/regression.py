"""Quality-prediction metrics: R², Pearson, Spearman, MAE and failure-detection AURC (DESIGN §5).

Pure functions on 1-D arrays of per-case values (``y_true`` the true quality, e.g. Dice; ``y_pred`` the predicted
quality). Everything is computed in float64. Degenerate inputs give ``nan`` instead of a convention-dependent number:
a correlation with a constant vector, R² with a constant target, any metric with fewer than two cases, R² and the
correlations with a missing (``nan``) or infinite value.

R² comes from ``sklearn.metrics.r2_score`` and the ranks of Spearman from ``scipy.stats.rankdata`` (both give the
same bits as the formulas here did). Pearson stays a formula of ours: ``scipy.stats.pearsonr`` normalises the
centred vectors before the dot product and differs in the last bit for most inputs (measured: 1588 of 2000 random
cases), which would change every ``pearson``/``spearman`` number written to ``scores*.csv`` and
``correlations.csv``.
"""

from __future__ import annotations

import math

import numpy as np


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype=np.float64).reshape(-1)
    b = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.shape[0]} true values, {b.shape[0]} predictions")
    return a, b


def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination ``1 - Σ(y - ŷ)² / Σ(y - ȳ)²`` (can be negative): ``sklearn.metrics.r2_score``,
    except that a constant ``y_true`` (``Σ(y - ȳ)² = 0``), fewer than two cases or a non-finite value give ``nan``
    (sklearn returns 1 or 0, warns, or raises)."""
    from sklearn.metrics import r2_score as sk_r2

    y, p = _pair(y_true, y_pred)
    if y.size < 2 or not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = float(sk_r2(y, p, force_finite=False))  # a zero denominator gives -inf or nan here
    return r2 if math.isfinite(r2) else math.nan


def pearson(x, y) -> float:
    """Pearson correlation coefficient of two 1-D arrays (``nan`` if either is constant, n < 2 or a value is not
    finite)."""
    a, b = _pair(x, y)
    if a.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if den == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(np.dot(a, b)) / den))


def rankdata(x) -> np.ndarray:
    """Ranks 1..n of a 1-D array (float64), ties get the average rank: ``scipy.stats.rankdata(method='average')``."""
    from scipy.stats import rankdata as sp_rankdata

    return np.asarray(sp_rankdata(np.asarray(x, dtype=np.float64).reshape(-1), method="average"), dtype=np.float64)


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson of the average ranks (``nan`` if either is constant, n < 2 or a value is
    not finite)."""
    a, b = _pair(x, y)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.nan
    return pearson(rankdata(a), rankdata(b))


def mae(y_true, y_pred) -> float:
    """Mean absolute error ``mean |y - ŷ|`` (``nan`` for no cases)."""
    y, p = _pair(y_true, y_pred)
    if y.size == 0:
        return math.nan
    return float(np.mean(np.abs(y - p)))


def aurc(confidence, loss) -> float:
    """Area under the risk-coverage curve for failure detection (lower is better).

    Cases are accepted in order of decreasing ``confidence`` (a stable sort, so ties keep input order); the
    selective risk at coverage ``k/n`` is the mean ``loss`` of the ``k`` accepted cases; AURC is the mean of the
    ``n`` risks. ``loss`` is per case, e.g. ``1 - Dice`` (continuous) or ``Dice < threshold`` (0/1 failures).
    """
    c, l_ = _pair(confidence, loss)
    if c.size == 0:
        return math.nan
    order = np.argsort(-c, kind="mergesort")
    risks = np.cumsum(l_[order]) / np.arange(1, c.size + 1)
    return float(np.mean(risks))


def regression_summary(y_true, y_pred, failure_threshold: float | None = None) -> dict[str, float]:
    """All quality-prediction metrics for one set of cases.

    Returns ``{"n", "r2", "pearson", "spearman", "mae", "aurc"}``. AURC uses the predicted quality as confidence and
    ``1 - y_true`` as loss, or the 0/1 failure ``y_true < failure_threshold`` when a threshold is given.
    """
    y, p = _pair(y_true, y_pred)
    loss = (y < failure_threshold).astype(np.float64) if failure_threshold is not None else 1.0 - y
    return {
        "n": int(y.size),
        "r2": r2_score(y, p),
        "pearson": pearson(y, p),
        "spearman": spearman(y, p),
        "mae": mae(y, p),
        "aurc": aurc(p, loss),
    }
