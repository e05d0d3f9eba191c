"""The critic framework's regressor (``--critic-head``): it turns the aggregated features of a case and the
critic features (``quality/critic.py``) into a predicted Dice. Pure numpy; the feature models are those of
``quality/features.py``."""

from __future__ import annotations

import numpy as np

from uqseg_cli.quality.features import fit_feature_model, predict_feature_model

CRITIC_HEADS = ("blend", "boost", "mean")
"""The critic framework's regressors (``--critic-head``), each built on boosted trees on the aggregated + critic
features: ``blend`` (the default), their mean with a ridge regression on the critic features alone; ``boost``, the
trees alone; ``mean``, their mean with boosted trees on the aggregated features alone."""

HEAD_MODELS = {"blend": ("boost", "linear_critic"), "boost": ("boost",), "mean": ("boost", "boost_features")}
"""The feature models (``quality/features.py``) each head fits; a saved model's ``arrays`` hold exactly these, so a
loaded file names its head (:func:`critic_head_of`)."""

HEAD_DETAIL = {"blend": "boost + ridge on critic features", "boost": "boost", "mean": "mean of two boosts"}
"""How the score summary's ``detail`` names each head."""

HEAD_TEXT = {
    "blend": "mean of a gradient-boosted regression and a ridge regression on the critic features",
    "boost": "gradient-boosted regression",
    "mean": "mean of two gradient-boosted regressions (with and without the critic features)",
}
"""How ``uqseg info`` describes each head."""


def fit_critic_head(x_features: np.ndarray, z_critic: np.ndarray, y: np.ndarray, seed: int,
                    head: str = "blend") -> dict[str, dict]:
    """The critic framework's regressor on the aggregated features ``(n, F)`` and the critic features ``(n, 4)``,
    targets ``y`` ``(n,)``: ``boost``, boosted trees on both; with ``head="blend"`` also ``linear_critic``, a ridge
    regression on the critic features alone; with ``head="mean"`` also ``boost_features``, boosted trees on the
    aggregated features alone. :func:`predict_critic_head` averages the two models a head holds.

    Why ``blend``: trees follow the critic's answer in steps, a ridge on it extrapolates smoothly, and their errors
    differ. Why the ridge sees the critic features alone: aggregated uncertainty features shift under a change of
    acquisition, trees saturate there and a linear model does not — a ridge on all features (measured) gave PH2 R²
    −0.58 with one seed's 16-epoch critics, and the features framework's linear model −2.97. Chosen without the
    test cases: cross-validated over the 600 labelled ISIC cases' out-of-fold critic features (5 folds × 3
    repeats) it reached R² 0.732 against 0.728 for a ridge on all features and 0.716 for the trees alone (critics
    trained 32 epochs, 3 seeds; 16 epochs: 0.681 / 0.677 / 0.660); measured held out in docs/quality.md. Why
    ``mean`` can help: a critic learns the annotation style of the masks it saw, so under a change of acquisition
    its features shift more than the aggregated ones and the mean moves half as far (PH2 r 0.87 at held-out ISIC
    R² 0.698 with critics trained 32 epochs)."""
    if head not in CRITIC_HEADS:
        raise ValueError(f"critic head must be one of {CRITIC_HEADS}, got {head!r}")
    out = {"boost": fit_feature_model("boost", np.hstack([x_features, z_critic]), y, seed)}
    if head == "blend":
        out["linear_critic"] = fit_feature_model("linear", z_critic, y, seed)
    elif head == "mean":
        out["boost_features"] = fit_feature_model("boost", x_features, y, seed)
    return out


def critic_head_of(heads: dict) -> str:
    """The head (:data:`CRITIC_HEADS`) whose models ``heads`` holds; ValueError for any other set."""
    for name, models in HEAD_MODELS.items():
        if set(heads) == set(models):
            return name
    raise ValueError(f"critic regressor models {sorted(heads)} are none of the heads {CRITIC_HEADS}")


def predict_critic_head(heads: dict, x_features: np.ndarray, z_critic: np.ndarray) -> np.ndarray:
    """Predicted quality ``(n,)`` in [0, 1] of :func:`fit_critic_head`'s models: ``boost`` alone, or its mean with
    ``linear_critic`` (blend) or ``boost_features`` (mean)."""
    head = critic_head_of(heads)
    p = predict_feature_model("boost", heads["boost"], np.hstack([x_features, z_critic]))
    if head == "blend":
        return 0.5 * (p + predict_feature_model("linear", heads["linear_critic"], z_critic))
    if head == "mean":
        return 0.5 * (p + predict_feature_model("boost", heads["boost_features"], x_features))
    return p
