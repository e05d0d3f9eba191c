"""The critic framework: its features against a brute-force definition, its start from the segmenter, that it learns a
reference, and that its cross-fitting is honest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from uqseg_cli.models.registry import create_model
from uqseg_cli.quality import scoring
from uqseg_cli.quality.critic import (
    CRITIC_FEATURES,
    create_critic,
    critic_features,
    critic_probs,
    fit_critic,
    predict_critic_features,
    reference_grid,
    tta_transforms,
)
from uqseg_cli.quality.crossfit import assign_folds, cross_fit
from uqseg_cli.quality.features import fit_feature_model, predict_feature_model
from uqseg_cli.quality.inputs import channel_names
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import init_as_segmenter
from uqseg_cli.quality.training import FitConfig


def _meta(measures=("entropy",), size=(32, 32), classes=2) -> QualityMeta:
    return QualityMeta(
        framework="critic", method="tta", measure=measures[0], measures=list(measures), backbone="resnet18", dims=2,
        input_size=list(size), num_classes=classes, image_channels=3,
        channels=channel_names("critic", 3, classes, list(measures)),
    )


def _brute(p: np.ndarray, s: np.ndarray) -> list[float]:
    """One case: ``p`` (K, H, W) probabilities, ``s`` (K-1, H, W) binary masks — loops over classes and voxels."""
    k = p.shape[0]
    hard = p.argmax(0)
    dices, softs = [], []
    for c in range(1, k):
        a, b = (hard == c).astype(float), s[c - 1]
        dices.append(2 * (a * b).sum() / (a.sum() + b.sum()) if a.sum() + b.sum() > 0 else 1.0)
        q = p[c]
        softs.append(2 * (q * b).sum() / (q.sum() + b.sum()) if q.sum() + b.sum() > 0 else 1.0)
    fg = 1 - p[0]
    s_fg = np.clip(s.sum(0), 0, 1)
    ratio = np.log((fg.sum() + 1) / (s_fg.sum() + 1))
    ents = []
    for v in np.ndindex(fg.shape):
        if fg[v] > 0.5 or s_fg[v] > 0:
            q = min(max(fg[v], 1e-12), 1 - 1e-12)
            ents.append(-(q * np.log(q) + (1 - q) * np.log(1 - q)))
    return [float(np.mean(dices)), float(np.mean(softs)), float(ratio), float(np.mean(ents)) if ents else 0.0]


@pytest.mark.parametrize("classes", [2, 3])
def test_critic_features_match_brute_force(classes: int) -> None:
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(4, classes, 9, 11)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    s = (rng.random((4, classes - 1, 9, 11)) < 0.3).astype(np.float32)
    s[2] = 0  # an empty segmentation
    p[3, 0] = 1.0  # a critic that sees no foreground at all (probabilities stay a distribution)
    p[3, 1:] = 0.0
    s[3] = 0  # ... on an empty segmentation: Dice 1 by definition, no region for the entropy
    got = critic_features(torch.from_numpy(p), torch.from_numpy(s))
    want = np.array([_brute(p[i], s[i]) for i in range(4)])
    assert got.shape == (4, len(CRITIC_FEATURES))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert got[3, 0] == 1.0 and got[3, 1] == 1.0 and got[3, 3] == 0.0


def test_reference_grid_is_nearest_neighbour() -> None:
    ref = np.zeros((8, 8), dtype=np.uint8)
    ref[2:6, 4:8] = 2
    got = reference_grid(ref, (4, 4))
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), ref[::2, ::2])


def test_init_critic_starts_as_the_segmenter() -> None:
    torch.manual_seed(0)
    seg = create_model("fpn-resnet18", in_channels=3, num_classes=2, dropout=0.2).eval()
    meta = _meta(measures=("entropy", "mutual_information"))
    critic = create_critic(meta).eval()
    n = init_as_segmenter(critic, seg.state_dict(), image_channels=3)
    assert n == len(seg.state_dict())  # every tensor of the segmenter has a home
    x = torch.randn(2, len(meta.channels), 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(critic(x), seg(x[:, :3]), rtol=1e-5, atol=1e-5)  # extra channels start at 0
        # ... and the extra channels are inputs: once their weights move, they change the answer
        critic.backbone.conv1.weight[:, 3:] = 0.1
        assert not torch.allclose(critic(x), seg(x[:, :3]), atol=1e-3)


def _discs(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs whose uncertainty channel *is* the reference disc and whose segmentation is the disc shifted."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    xs, ms = [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 9)
        ref = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)
        seg = np.roll(ref, int(rng.integers(-4, 5)), axis=1)
        img = rng.normal(size=(3, size, size)).astype(np.float32)
        xs.append(np.concatenate([img, seg[None], ref[None]]))
        ms.append(ref.astype(np.int64))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ms))


def test_fit_critic_learns_the_reference_from_its_inputs() -> None:
    torch.set_num_threads(1)
    meta = _meta()
    x, m = _discs(32, seed=0)
    xt, mt = _discs(8, seed=1)
    cfg = FitConfig(epochs=12, patience=12, batch_size=8, lr=3e-3, val_fraction=0.0, seed=0)
    model, fitted = fit_critic(x, m, meta, cfg)
    assert fitted.training["epochs_run"] == 12 and fitted.training["loss"] == "dice+ce"
    assert len(fitted.channel_mean) == len(meta.channels)
    z = predict_critic_features(model, xt, fitted)
    seg = xt[:, 3].numpy() > 0.5
    true = [2 * (s & (r > 0)).sum() / (s.sum() + (r > 0).sum()) for s, r in zip(seg, mt.numpy(), strict=True)]
    # the critic segments the reference, so its Dice with the segmentation is the segmentation's true Dice
    np.testing.assert_allclose(z[:, 0], true, atol=0.08)
    # an untrained critic does not know it
    z0 = predict_critic_features(create_critic(fitted), xt, fitted)
    assert np.abs(z0[:, 0] - true).mean() > 0.2


def test_cross_fitting_is_honest(monkeypatch) -> None:
    """Each labelled case's critic features come from a critic that never saw it; every other case gets the mean of
    all critics' features; the regressor learns from those features."""
    n, n_lab = 40, 30
    labelled = np.arange(n) < n_lab
    rng = np.random.default_rng(0)
    target = np.where(labelled, rng.uniform(0.3, 1.0, n), np.nan)
    long = pd.DataFrame({"case": [f"c{i:02d}" for i in range(n)], "method": "tta", "measure": "entropy",
                         "region": "foreground", "value": rng.normal(size=n)})
    batch = scoring.Batch([f"c{i:02d}" for i in range(n)], target, np.zeros(n, bool), long, ["entropy"])
    batch.labelled = labelled
    x_raw = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 5, 4, 4).clone()  # x = case index
    masks = torch.zeros((n_lab, 4, 4), dtype=torch.int64)
    folds = assign_folds(n_lab, 3, 0)
    seen: list[set[int]] = []

    class Fitted(set):
        def cpu(self):
            return self

    def fake_fit(x, mk, meta, cfg, device, on_epoch=None):
        ids = Fitted(int(v) for v in x[:, 0, 0, 0])
        seen.append(ids)
        return ids, dataclasses.replace(meta, training={"n_train": len(ids), "n_val": 0, "best_epoch": 1,
                                                        "epochs_run": 1, "best_val_loss": 0.0})

    def fake_features(model, x, meta, batch_size, device):
        idx = x[:, 0, 0, 0].long().numpy()
        assert not (set(idx[idx < n_lab]) & model)  # a critic never scores a labelled case it was fitted on
        # critic/dice = the true target (a perfect critic), minus an offset that names the critic
        out = np.zeros((len(idx), len(CRITIC_FEATURES)))
        out[:, 0] = np.nan_to_num(target[idx], nan=0.5) - 0.01 * len(seen)
        return out

    monkeypatch.setattr(scoring, "fit_critic", fake_fit)
    monkeypatch.setattr(scoring, "predict_critic_features", fake_features)
    monkeypatch.setattr(scoring, "critics_state", lambda models: {})
    meta = dataclasses.replace(_meta(), features=["entropy/foreground"], input_size=[4, 4])
    p = scoring.predict_critic_framework(batch, x_raw, masks, meta, folds, FitConfig(), "cpu", head="mean")
    assert len(seen) == 3
    for f, ids in enumerate(seen):  # critic f was fitted on exactly the labelled cases outside fold f
        assert ids == set(np.flatnonzero(labelled)[folds != f].tolist())
    assert (p.split[:n_lab] == "oof").all() and (p.split[n_lab:] == "test").all()
    assert p.model_meta.critics == 3 and p.model_meta.features == ["entropy/foreground", *CRITIC_FEATURES]
    # out of fold, the prediction is the mean of the features-only boost (cross-fitted here on the same folds) and
    # a boost that follows the (perfect) critic feature closely
    xa = long["value"].to_numpy()[:, None]
    alone_oof = cross_fit(folds, lambda tr, te, f: predict_feature_model(
        "boost", fit_feature_model("boost", xa[tr], target[tr], 0), xa[te]))
    with_critic = 2 * p.predicted[:n_lab] - alone_oof
    assert np.corrcoef(with_critic, target[:n_lab])[0, 1] > 0.95
    # new cases: the mean of a boost on features + the K critics' mean features and a boost on the features alone
    z = np.zeros((n - n_lab, len(CRITIC_FEATURES)))
    z[:, 0] = 0.5 - 0.02  # the fake critics' offsets 0.01, 0.02, 0.03, averaged
    assert set(p.arrays) == {"boost", "boost_features"}
    want = 0.5 * (predict_feature_model("boost", p.arrays["boost"], np.hstack([xa[n_lab:], z]))
                  + predict_feature_model("boost", p.arrays["boost_features"], xa[n_lab:]))
    np.testing.assert_allclose(p.predicted[n_lab:], want, rtol=0, atol=1e-12)
    # the features-only model never sees a critic: it is the features framework's boost on the same cases
    alone = fit_feature_model("boost", xa[:n_lab], target[:n_lab], 0)
    np.testing.assert_array_equal(predict_feature_model("boost", alone, xa),
                                  predict_feature_model("boost", p.arrays["boost_features"], xa))
    # the boost head is the boost on features + critic features alone (the same model as the mean's)
    seen.clear()
    b = scoring.predict_critic_framework(batch, x_raw, masks, meta, folds, FitConfig(), "cpu", head="boost")
    assert set(b.arrays) == {"boost"} and b.detail.endswith("+ boost")
    np.testing.assert_array_equal(scoring.predict_critic_head(b.arrays, xa[n_lab:], z),
                                  predict_feature_model("boost", p.arrays["boost"], np.hstack([xa[n_lab:], z])))
    np.testing.assert_array_equal(b.predicted[n_lab:], scoring.predict_critic_head(b.arrays, xa[n_lab:], z))
    # the default (blend) adds a ridge regression on the critic features alone and averages the two
    seen.clear()
    d = scoring.predict_critic_framework(batch, x_raw, masks, meta, folds, FitConfig(), "cpu")
    assert set(d.arrays) == {"boost", "linear_critic"} and d.detail.endswith("+ boost + ridge on critic features")
    both = np.hstack([xa[n_lab:], z])
    np.testing.assert_array_equal(predict_feature_model("boost", d.arrays["boost"], both),
                                  predict_feature_model("boost", p.arrays["boost"], both))
    np.testing.assert_allclose(d.predicted[n_lab:], 0.5 * (predict_feature_model("boost", d.arrays["boost"], both)
                               + predict_feature_model("linear", d.arrays["linear_critic"], z)), rtol=0, atol=1e-12)
    assert np.corrcoef(d.predicted[:n_lab], target[:n_lab])[0, 1] > 0.95
    with pytest.raises(ValueError, match="critic head"):
        scoring.fit_critic_head(xa[:n_lab], np.zeros((n_lab, 4)), target[:n_lab], 0, head="median")


def _numpy_symmetries(a: np.ndarray, square: bool) -> list:
    """(forward, inverse) pairs on ``(N, C, *spatial)`` arrays, written with numpy: the 8 symmetries of the square
    for square 2D grids, else every combination of flips."""
    d = a.ndim - 2
    if d == 2 and square:
        pairs = []
        for k in range(4):
            pairs.append((lambda v, k=k: np.rot90(v, k, (2, 3)), lambda v, k=k: np.rot90(v, -k, (2, 3))))
            pairs.append((lambda v, k=k: np.flip(np.rot90(v, k, (2, 3)), 3),
                          lambda v, k=k: np.rot90(np.flip(v, 3), -k, (2, 3))))
        return pairs
    out = []
    for m in range(2**d):
        axes = tuple(2 + i for i in range(d) if (m >> i) & 1)
        out.append((lambda v, ax=axes: np.flip(v, ax) if ax else v, lambda v, ax=axes: np.flip(v, ax) if ax else v))
    return out


@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (4, 6, 8)])
def test_critic_tta_is_the_mean_over_the_symmetries(shape) -> None:
    """The averaged probabilities equal a numpy loop over the symmetries (each mapped back), and the average is
    equivariant: a transformed input gives the transformed average."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d if len(shape) == 2 else torch.nn.Conv3d
    model = torch.nn.Sequential(conv(2, 3, 3, padding=1), torch.nn.ReLU(), conv(3, 3, 3, padding=1)).double()
    x = torch.randn(3, 2, *shape, dtype=torch.float64)
    syms = _numpy_symmetries(x.numpy(), square=len(shape) == 2 and shape[0] == shape[1])
    assert len(tta_transforms(shape)) == len(syms) and tta_transforms(shape)[0] == (0, ())

    def probs(v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(np.ascontiguousarray(v))), 1).double().numpy()

    want = np.mean([inv(probs(fwd(x.numpy()))) for fwd, inv in syms], axis=0)
    got = critic_probs(model, x, batch_size=2, tta=len(syms)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # critic_probs returns float32
    np.testing.assert_allclose(critic_probs(model, x, tta=1).numpy(), probs(x.numpy()), rtol=0, atol=1e-6)
    fwd = syms[-1][0]
    turned = critic_probs(model, torch.from_numpy(np.ascontiguousarray(fwd(x.numpy()))), tta=len(syms)).numpy()
    np.testing.assert_allclose(turned, fwd(got), rtol=0, atol=1e-6)


def test_critic_features_use_the_models_tta() -> None:
    """``meta.critic_tta`` decides how many symmetries the features average over; a file without it: one pass."""
    meta = dataclasses.replace(_meta(), channel_mean=[0.0] * 5, channel_std=[1.0] * 5)
    model = create_critic(meta).eval()
    x = torch.rand(2, len(meta.channels), 32, 32)
    seg = (x[:, 3:4] >= 0.5).float()
    one = critic_features(critic_probs(model, x, tta=1), seg)
    eight = critic_features(critic_probs(model, x, tta=8), seg)
    np.testing.assert_array_equal(predict_critic_features(model, x, meta), one)
    np.testing.assert_array_equal(predict_critic_features(model, x, dataclasses.replace(meta, critic_tta=8)), eight)
    assert not np.allclose(one, eight)


def test_blend_head_is_the_mean_of_sklearn_boosted_trees_and_ridge():
    """The blend head against scikit-learn fitted directly: median imputation, then GradientBoostingRegressor (the
    features module's settings) on the aggregated + critic features, StandardScaler + RidgeCV on the critic features
    alone; each clipped to [0, 1], then averaged."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from uqseg_cli.quality.critic_head import critic_head_of, fit_critic_head, predict_critic_head

    rng = np.random.default_rng(3)
    xa, z = rng.normal(size=(120, 3)), rng.uniform(size=(120, 4))
    xa[::7, 1] = np.nan
    y = np.clip(0.6 * z[:, 0] + 0.1 * xa[:, 0] + 0.05 * rng.normal(size=120), 0, 1)
    heads = fit_critic_head(xa[:90], z[:90], y[:90], seed=5)
    assert critic_head_of(heads) == "blend"
    x = np.hstack([xa, z])
    gb = make_pipeline(SimpleImputer(strategy="median"), GradientBoostingRegressor(
        loss="huber", n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8, min_samples_leaf=5,
        random_state=5))
    ridge = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    want = 0.5 * (np.clip(gb.fit(x[:90], y[:90]).predict(x[90:]), 0, 1)
                  + np.clip(ridge.fit(z[:90], y[:90]).predict(z[90:]), 0, 1))
    np.testing.assert_allclose(predict_critic_head(heads, xa[90:], z[90:]), want, rtol=0, atol=1e-6)
    assert critic_head_of(fit_critic_head(xa[:90], z[:90], y[:90], 5, head="boost")) == "boost"
    assert critic_head_of(fit_critic_head(xa[:90], z[:90], y[:90], 5, head="mean")) == "mean"
    with pytest.raises(ValueError, match="none of the heads"):
        critic_head_of({"boost": heads["boost"], "forest": heads["boost"]})
