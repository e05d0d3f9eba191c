"""The combined uncertainty score: several per-case features z-scored across a batch of cases and averaged.

The z-score statistics are saved (:class:`CombinedStats`) so that a later batch is scored on the same scale; the
weights are equal or learned by ridge regression against ``1 - Dice``; higher means more uncertain in both cases.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from uqseg_cli.quality.regions import LONG_COLUMNS, feature_matrix


@dataclass
class CombinedStats:
    """Z-score statistics and weights of the combined score, per method.

    ``features``: the ``(measure, region)`` pairs combined (as ``"measure/region"`` strings); per method ``mean``
    and ``std`` (population, ``ddof=0``; a zero std is stored as 1) and ``weights`` aligned with ``features``.
    ``weighting`` is ``"equal"`` or ``"learned"`` (ridge on ``1 - Dice`` with penalty ``alpha``).
    """

    features: list[str]
    weighting: str = "equal"
    alpha: float = 1.0
    methods: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    n_cases: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": "uqseg-combined/1",
            "features": list(self.features),
            "weighting": self.weighting,
            "alpha": self.alpha,
            "methods": self.methods,
            "n_cases": self.n_cases,
        }

    @classmethod
    def from_json(cls, obj: dict) -> CombinedStats:
        if obj.get("format") != "uqseg-combined/1":
            raise ValueError(f"not a uqseg combined-score statistics file (format {obj.get('format')!r})")
        return cls(
            features=list(obj["features"]),
            weighting=obj["weighting"],
            alpha=float(obj.get("alpha", 1.0)),
            methods={k: {kk: [float(x) for x in vv] for kk, vv in v.items()} for k, v in obj["methods"].items()},
            n_cases={k: int(v) for k, v in obj.get("n_cases", {}).items()},
        )

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> CombinedStats:
        return cls.from_json(json.loads(Path(path).read_text()))


def zscore_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population stds (``ddof=0``) of ``x`` ``(n_cases, n_features)``, ignoring ``nan``.

    A zero or undefined std becomes 1 so that the transform stays finite.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        mean = np.nanmean(x, axis=0) if x.size else np.zeros(x.shape[1])
        std = np.nanstd(x, axis=0) if x.size else np.ones(x.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return mean, std


def zscore_apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per column; missing values (``nan``) become 0, i.e. the fitted batch mean."""
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    return np.where(np.isfinite(z), z, 0.0)


def ridge_weights(z: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge coefficients of ``y`` on the columns of ``z`` with an unpenalised intercept (closed form).

    Equals ``sklearn.linear_model.Ridge(alpha).fit(z, y).coef_`` up to rounding (tests/quality/test_aggregate_maths).
    """
    # Kept instead of sklearn's Ridge: the penalty here is the user's --alpha (no leave-one-out choice, so RidgeCV
    # does not apply), and Ridge's Cholesky solve rounds differently: measured on 900 random fits, 738 differ from
    # this LU solve in the last bits (at most 5.6e-17), which would change the weights in features.stats.json and
    # every combined score of `aggregate --weights learned`, byte for byte, for no gain.
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    zc = z - z.mean(axis=0)
    yc = y - y.mean()
    return np.linalg.solve(zc.T @ zc + alpha * np.eye(z.shape[1]), zc.T @ yc)


def fit_combined(
    x: np.ndarray,
    features: Sequence[str],
    method: str,
    stats: CombinedStats | None = None,
    dice: np.ndarray | None = None,
    weighting: str = "equal",
    alpha: float = 1.0,
) -> CombinedStats:
    """Fit (or extend) the combined-score statistics for one method from ``x`` ``(n_cases, n_features)``.

    With ``weighting="learned"``, ``dice`` (one true Dice per case, ``nan`` where unknown) gives ridge weights of
    ``1 - Dice`` on the z-scores over the cases that have a Dice; otherwise every weight is ``1 / n_features``.
    """
    if stats is None:
        stats = CombinedStats(features=list(features), weighting=weighting, alpha=alpha)
    mean, std = zscore_fit(x)
    z = zscore_apply(x, mean, std)
    if weighting == "learned":
        if dice is None:
            raise ValueError("learned weights need the true Dice of the cases")
        d = np.asarray(dice, dtype=np.float64)
        ok = np.isfinite(d)
        if ok.sum() < len(features) + 2:
            raise ValueError(
                f"learned weights for {len(features)} features need at least {len(features) + 2} cases with a "
                f"reference; method {method!r} has {int(ok.sum())}"
            )
        w = ridge_weights(z[ok], 1.0 - d[ok], alpha)
    elif weighting == "equal":
        w = np.full(len(features), 1.0 / len(features))
    else:
        raise ValueError(f"weighting must be 'equal' or 'learned', got {weighting!r}")
    stats.methods[method] = {"mean": mean.tolist(), "std": std.tolist(), "weights": w.tolist()}
    stats.n_cases[method] = int(x.shape[0])
    return stats


def apply_combined(x: np.ndarray, stats: CombinedStats, method: str) -> np.ndarray:
    """Combined score per case, ``Σ_j w_j (x_j - mean_j) / std_j``, with the saved statistics of ``method``."""
    if method not in stats.methods:
        raise KeyError(method)
    s = stats.methods[method]
    z = zscore_apply(x, np.asarray(s["mean"]), np.asarray(s["std"]))
    return z @ np.asarray(s["weights"])


def add_combined(
    long: pd.DataFrame,
    features: Sequence[str],
    region_label: str,
    stats: CombinedStats | None = None,
    dice: Mapping[str, float] | None = None,
    weighting: str = "equal",
    alpha: float = 1.0,
) -> tuple[pd.DataFrame, CombinedStats]:
    """Append ``measure="combined"`` rows (one per case and method) to the long table.

    With ``stats`` given, its saved z-score statistics and weights are reused as they are (a later batch on the
    same scale); otherwise they are fitted on this batch (``dice``: case → true Dice, for learned weights).
    """
    features = list(features)
    new_stats = stats is None
    if new_stats:
        stats = CombinedStats(features=features, weighting=weighting, alpha=alpha)
    elif list(stats.features) != features:
        features = list(stats.features)
    extra = []
    for method in sorted(long["method"].unique()):
        cases = sorted(long.loc[long["method"] == method, "case"].unique())
        x = feature_matrix(long, method, features, cases)
        if new_stats:
            d = np.array([dice.get(c, np.nan) if dice else np.nan for c in cases])
            fit_combined(x, features, method, stats, dice=d, weighting=weighting, alpha=alpha)
        elif method not in stats.methods:
            raise KeyError(f"the statistics have no method {method!r} (they have {', '.join(stats.methods)})")
        score = apply_combined(x, stats, method)
        extra.extend((c, method, "combined", region_label, float(v)) for c, v in zip(cases, score, strict=True))
    out = pd.concat([long, pd.DataFrame(extra, columns=LONG_COLUMNS)], ignore_index=True)
    return out, stats
