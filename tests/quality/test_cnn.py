"""The CNN regressor learns a target that depends on the uncertainty map, not shuffled labels; the checkpoint
round-trips with weights_only; inputs are built from a real (tiny) stage-file chain."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from uqseg_cli.io.store import StageFile
from uqseg_cli.metrics.regression import r2_score
from uqseg_cli.quality.checkpoint import load_quality_model, read_quality_checkpoint, save_quality_model
from uqseg_cli.quality.inputs import build_inputs, channel_names, load_channels, raw_inputs
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import QualityRegressor
from uqseg_cli.quality.training import FitConfig, augment_batch, fit_cnn, predict_cnn

from .synth import write_chain

BACKBONE = "test_resnet"  # a tiny timm ResNet (0.4 M parameters) keeps CPU tests fast


def _synthetic(n: int, seed: int, size: int = 32):
    """Channels (seg, uncertainty): a disc whose uncertainty level a sets the target y = 0.95 - 0.6 a."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    x = np.zeros((n, 2, size, size), np.float32)
    a = rng.uniform(0, 1, n)
    for i in range(n):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 9)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r**2
        x[i, 0] = disc
        ring = disc ^ (((yy - cy) ** 2 + (xx - cx) ** 2) <= (r - 2) ** 2)
        x[i, 1] = a[i] * ring + 0.05 * rng.random((size, size))
    return torch.from_numpy(x), 0.95 - 0.6 * a


META = QualityMeta(
    framework="seg-unc",
    method="tta",
    measures=["entropy"],
    backbone=BACKBONE,
    dims=2,
    input_size=[32, 32],
    channels=["seg:1", "unc:entropy"],
)
CFG = FitConfig(epochs=10, patience=4, batch_size=16, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread avoids OpenMP contention on a shared machine
    x, y = _synthetic(64, seed=0)
    xt, yt = _synthetic(48, seed=1)
    model, meta = fit_cnn(x, y, META, CFG)
    yield model, meta, xt, yt, x, y
    torch.set_num_threads(threads)


def test_learns_uncertainty_dependent_target(trained):
    from uqseg_cli.quality.inputs import standardize

    model, meta, xt, yt, _, _ = trained
    pred = predict_cnn(model, standardize(xt, meta))
    assert stats.pearsonr(pred, yt).statistic > 0.9
    assert r2_score(yt, pred) > 0.8
    assert meta.training["n_val"] == 13 and meta.training["n_train"] == 51


def test_fails_on_shuffled_labels(trained):
    from uqseg_cli.quality.inputs import standardize

    # With shuffled labels the network can only fit noise: on held-out cases it explains nothing (R² <= ~0).
    # (Pearson alone is no test here: an overfitted net is still some function of the uncertainty level, with a
    # random slope, so |r| can be large by chance while its predictions are useless.)
    _, _, xt, yt, x, y = trained
    for seed in (0, 1):
        y_shuffled = np.random.default_rng(seed).permutation(y)
        model, meta = fit_cnn(x, y_shuffled, META, CFG)
        pred = predict_cnn(model, standardize(xt, meta))
        assert r2_score(yt, pred) < 0.1


def test_checkpoint_round_trip(trained, tmp_path):
    from uqseg_cli.quality.inputs import standardize

    model, meta, xt, _, _, _ = trained
    save_quality_model(tmp_path / "quality.pt", meta, model)
    raw = torch.load(tmp_path / "quality.pt", weights_only=True)  # no code runs on load
    assert raw["meta"]["channel_mean"] == meta.channel_mean and raw["version"] == 1
    m2, meta2 = load_quality_model(tmp_path / "quality.pt")
    xs = standardize(xt, meta2)
    np.testing.assert_array_equal(predict_cnn(m2, xs), predict_cnn(model, xs))
    with torch.no_grad():
        emb = m2.embed(xs[:3])
    assert emb.shape == (3, m2.num_features)
    assert m2.gradcam_layer in dict(m2.named_modules())
    assert read_quality_checkpoint(tmp_path / "quality.pt")["meta"].backbone == BACKBONE
    assert meta2 == meta


def test_augment_same_transform_all_channels():
    g = torch.Generator().manual_seed(0)
    base = torch.arange(16.0).reshape(1, 1, 4, 4)
    x = torch.cat([base, base * 10], dim=1).repeat(8, 1, 1, 1)
    out = augment_batch(x, g)
    torch.testing.assert_close(out[:, 1], out[:, 0] * 10)
    assert len({tuple(o[0].flatten().tolist()) for o in out}) > 1  # samples draw different transforms
    x3 = torch.rand(4, 2, 5, 6, 7)
    x3[:, 1] = x3[:, 0] * 3
    o3 = augment_batch(x3, g)
    torch.testing.assert_close(o3[:, 1], o3[:, 0] * 3)


def test_inputs_from_stage_chain(tmp_path):
    cases = write_chain(tmp_path, n=3, shape=(20, 24))
    meta = QualityMeta(
        framework="img-seg-unc",
        method="tta",
        dims=2,
        input_size=[16, 16],
        channels=channel_names("img-seg-unc", 3, 2, ["confidence", "entropy"]),
    )
    assert meta.channels == ["image:0", "image:1", "image:2", "seg:1", "unc:confidence", "unc:entropy"]
    with StageFile(tmp_path / "uncertainty.h5") as sf:
        view = sf.case("case01")
        ch = load_channels(view, meta)
        c = cases["case01"]
        np.testing.assert_array_equal(ch[0], c["image"][0].astype(np.float32))
        np.testing.assert_array_equal(ch[3], c["segmentation"].astype(np.float32))
        np.testing.assert_allclose(ch[4], 1 - c["maps"]["confidence"])  # uncertainty direction
        np.testing.assert_array_equal(ch[5], c["maps"]["entropy"])
        raw = raw_inputs(view, meta)
        assert raw.shape == (6, 16, 16)
        meta = dataclasses.replace(meta, channel_mean=[1.0] * 6, channel_std=[2.0] * 6)
        torch.testing.assert_close(build_inputs(view, meta), (raw - 1.0) / 2.0)


def test_3d_model_shapes():
    m = QualityRegressor("ignored", in_chans=3, dims=3)
    x = torch.rand(2, 3, 16, 16, 16)
    assert m(x).shape == (2,) and m.embed(x).shape == (2, 128)
    assert m.gradcam_layer in dict(m.named_modules())
