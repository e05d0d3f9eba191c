"""Quality-prediction metrics: R², Pearson, Spearman, MAE and failure-detection AURC (DESIGN §5).

Pure functions on 1-D arrays of per-case values (``y_true`` the true quality, e.g. Dice; ``y_pred`` the predicted
quality). Everything is computed in float64. Degenerate inputs give ``nan`` instead of a convention-dependent number:
a correlation with a constant vector, R² with a constant target, any metric with fewer than two cases.
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
    """Coefficient of determination ``1 - Σ(y - ŷ)² / Σ(y - ȳ)²`` (can be negative).

    Equals ``sklearn.metrics.r2_score`` except that a constant ``y_true`` gives ``nan`` (sklearn returns 1 or 0).
    """
    y, p = _pair(y_true, y_pred)
    if y.size < 2:
        return math.nan
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - float(np.sum((y - p) ** 2)) / ss_tot


def pearson(x, y) -> float:
    """Pearson correlation coefficient of two 1-D arrays (``nan`` if either is constant or n < 2)."""
    a, b = _pair(x, y)
    if a.size < 2:
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if den == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(np.dot(a, b)) / den))


def rankdata(x) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties get the average rank (as ``scipy.stats.rankdata(method='average')``)."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # start index of each run of equal values
    new_run = np.empty(a.size, dtype=bool)
    if a.size:
        new_run[0] = True
        new_run[1:] = sorted_a[1:] != sorted_a[:-1]
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], a.size)  # exclusive
    avg = (starts + ends - 1) / 2.0 + 1.0  # average of 1-based ranks start+1 .. end
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = avg[run_id]
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson of the average ranks (``nan`` if either is constant or n < 2)."""
    a, b = _pair(x, y)
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
