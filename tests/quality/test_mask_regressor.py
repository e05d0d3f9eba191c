"""The mask regressor (``score --learn-mask``): its agreement inputs against a brute-force definition, its start from
the segmenter, that its masks train it and never reach validation, and the command end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import run_captured
from tests.quality.synth import write_chain
from uqseg_cli.models.checkpoint import Checkpoint, save_checkpoint
from uqseg_cli.models.preprocessing import Preprocessing
from uqseg_cli.models.registry import create_model
from uqseg_cli.quality.checkpoint import load_quality_model
from uqseg_cli.quality.inputs import build_inputs, channel_names
from uqseg_cli.quality.level_pairs import LevelPairs
from uqseg_cli.quality.mask_regressor import MaskRegressor, soft_agreement
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import create_quality_model, init_as_segmenter
from uqseg_cli.quality.training import FitConfig, fit_cnn, split_validation


def test_soft_agreement_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    fg = rng.uniform(size=(4, 6, 5))
    seg = (rng.uniform(size=(4, 6, 5)) < 0.3).astype(float)
    fg[2], seg[2] = 0.0, 0.0  # both empty: Dice 1, ratio log(1/1) = 0
    seg[3] = 0.0
    got = soft_agreement(torch.as_tensor(fg), torch.as_tensor(seg)).numpy()
    for i in range(4):
        a, b = fg[i].sum(), seg[i].sum()
        dice = 1.0 if a + b == 0 else 2 * (fg[i] * seg[i]).sum() / (a + b)
        np.testing.assert_allclose(got[i], [dice, np.log((a + 1) / (b + 1))], rtol=1e-12)


def _meta(framework="img-seg-unc", size=(32, 32), classes=2) -> QualityMeta:
    img = 3 if framework != "seg-unc" else 0
    ch = channel_names(framework, img, classes, ["entropy"])
    return QualityMeta(
        framework=framework, method="tta", measure="entropy", measures=["entropy"], backbone="resnet18", dims=2,
        input_size=list(size), num_classes=classes, image_channels=img, channels=ch, dropout=0.2, learn_mask=True,
        channel_mean=[0.1 * i for i in range(len(ch))], channel_std=[1.0 + 0.5 * i for i in range(len(ch))],
    )


def test_it_starts_as_the_segmenter_and_reads_the_scored_segmentation() -> None:
    torch.manual_seed(0)
    meta = _meta()
    seg_net = create_model("fpn-resnet18", in_channels=3, num_classes=2, dropout=0.0).eval()
    model = create_quality_model(meta).eval()
    assert isinstance(model, MaskRegressor) and model.gradcam_layer == "net.backbone.layer4"
    n = init_as_segmenter(model.net, seg_net.state_dict(), image_channels=3)
    assert n == len(seg_net.state_dict())
    x = torch.randn(2, len(meta.channels), 32, 32)
    q, logits = model.outputs(x)
    torch.testing.assert_close(logits, seg_net(x[:, :3]))  # the extra channels start at zero weight
    # the head starts at the soft Dice of its mask and the raw scored segmentation (embedding weights aside)
    model.init_output(0.3)
    assert float(model.head.weight.detach()[0, :model.num_features].abs().max()) > 0
    with torch.no_grad():
        model.head.weight[0, :model.num_features] = 0.0
    k = meta.channels.index("seg:1")
    raw_seg = x[:, k] * meta.channel_std[k] + meta.channel_mean[k] >= 0.5
    fg = 1.0 - torch.softmax(logits, 1)[:, 0]
    ref = 2 * (fg * raw_seg).sum((1, 2)) / (fg.sum((1, 2)) + raw_seg.sum((1, 2)))
    torch.testing.assert_close(model(x), ref.clamp(1e-3, 1 - 1e-3))
    assert model.embed(x).shape == (2, model.num_features)
    # without image channels (seg-unc) the first convolution takes the segmenter's mean filter, not zeros
    su = create_quality_model(_meta("seg-unc"))
    init_as_segmenter(su.net, seg_net.state_dict(), image_channels=0)
    w = seg_net.state_dict()["backbone.conv1.weight"]
    torch.testing.assert_close(su.net.state_dict()["backbone.conv1.weight"][:, 0], w.mean(1) * 3 / 2)


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    meta = _meta("seg-unc", size=(32, 32))
    seg = (torch.rand(n, 1, 32, 32, generator=g) < 0.4).float()
    unc = torch.rand(n, 1, 32, 32, generator=g)
    masks = (torch.rand(n, 32, 32, generator=g) < 0.4).long()
    y = np.random.default_rng(seed).uniform(0.3, 0.9, n)
    return torch.cat([seg, unc], 1), y, masks, QualityMeta(**{**meta.__dict__, "channel_mean": None,
                                                              "channel_std": None})


CFG = FitConfig(epochs=2, patience=2, batch_size=6, lr=3e-3, seed=0, val_fraction=0.25)


def _weights(model) -> torch.Tensor:
    return torch.cat([v.flatten().float() for v in model.state_dict().values()])


def test_training_masks_train_it_and_validation_masks_never_do() -> None:
    torch.set_num_threads(1)
    x, y, masks, meta = _data(12, seed=1)
    model, m = fit_cnn(x, y, meta, CFG, masks=masks)
    base = _weights(model)
    assert m.training["loss"] == "mse+mask" and m.learn_mask
    tr, va = split_validation(12, CFG.val_fraction, CFG.seed)
    other = masks.clone()
    other[torch.as_tensor(va)] = 1 - other[torch.as_tensor(va)]
    torch.testing.assert_close(_weights(fit_cnn(x, y, meta, CFG, masks=other)[0]), base, rtol=0, atol=0)
    other = masks.clone()
    other[torch.as_tensor(tr)] = 1 - other[torch.as_tensor(tr)]
    assert not torch.equal(_weights(fit_cnn(x, y, meta, CFG, masks=other)[0]), base)
    # a vote-level pair trains on its own case's mask: flipping validation masks still changes nothing
    pairs = LevelPairs(torch.roll(x[:, :1], 1, dims=2), np.full(12, 0.5), np.arange(12))
    with_pairs = _weights(fit_cnn(x, y, meta, CFG, masks=masks, pairs=pairs)[0])
    other = masks.clone()
    other[torch.as_tensor(va)] = 0
    torch.testing.assert_close(_weights(fit_cnn(x, y, meta, CFG, masks=other, pairs=pairs)[0]), with_pairs,
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="reference masks"):
        fit_cnn(x, y, meta, CFG)


FAST = ["--backbone", "resnet18", "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    write_chain(tmp_path, n=12, shape=(24, 24), no_ref=("case10", "case11"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    torch.set_num_threads(threads)


def test_score_learn_mask_end_to_end(folder, capsys) -> None:
    # the default on 2D cases with an fpn-<backbone> and a segmenter to start from
    torch.manual_seed(0)
    seg = create_model("fpn-resnet18", in_channels=3, num_classes=2, dropout=0.2)
    save_checkpoint(folder / "seg.pt", seg, Checkpoint(seg.arch, seg.init_args, Preprocessing(), ["bg", "lesion"]))
    code, _, err = run_captured(capsys, "score", "--framework", "img-seg-unc", "--measure", "entropy", "--cv", "2",
                                "-o", "s.csv", "--save-model", "q.pt", "--init-from", "seg.pt", *FAST)
    assert code == 0, err
    model, meta = load_quality_model(folder / "q.pt")
    assert meta.learn_mask and isinstance(model, MaskRegressor) and meta.training["loss"] == "mse+mask"
    assert meta.init_tensors_from_segmenter == len(seg.state_dict())
    assert meta.training["n_val"] == 2  # with the image it keeps a validation part (FIT_DEFAULTS["cnn"])
    code, out, _ = run_captured(capsys, "info", "q.pt")
    assert code == 0 and "fpn-resnet18 that also learns the reference mask" in out
    # the saved model reproduces the fitted run's predictions, through score --model and through build_inputs
    code, _, err = run_captured(capsys, "score", "--model", "q.pt", "-o", "again.csv")
    assert code == 0, err
    fit = pd.read_csv("s.csv").query("framework == 'img-seg-unc' and split == 'test'").set_index("case")
    again = pd.read_csv("again.csv").query("framework == 'img-seg-unc'").set_index("case")
    assert list(fit.index) == ["case10", "case11"]
    np.testing.assert_allclose(again.loc[fit.index, "predicted_dice"], fit.predicted_dice, atol=1e-9)
    from uqseg_cli.io.store import StageFile

    with StageFile(folder / "uncertainty.h5") as sf, torch.no_grad():
        x = torch.stack([build_inputs(sf.case(c), meta) for c in fit.index])
        np.testing.assert_allclose(model(x).double().numpy(), fit.predicted_dice.to_numpy(), atol=1e-6)
    # explain reads it like any CNN regressor
    code, _, err = run_captured(capsys, "explain", "-i", "uncertainty.h5", "--model", "q.pt", "-o", "ex")
    assert code == 0, err
    assert (folder / "ex" / "gradcam-high.h5").exists() and (folder / "ex" / "umap.csv").exists()
    # without a CNN framework the flag is named as ignored
    code, _, err = run_captured(capsys, "score", "--no-learn-mask", "-o", "f.csv", "--save-model", "f.pt")
    assert code == 0 and "--no-learn-mask does not apply to" in err
    # a backbone without a registered fpn: asked for, one line; by default, the plain CNN and a line saying so
    tiny = ["--framework", "seg-unc", "--measure", "entropy", "--cv", "0", "-o", "t.csv", "--save-model", "t.pt",
            *FAST, "--backbone", "test_resnet"]
    code, _, err = run_captured(capsys, "score", *tiny, "--learn-mask")
    assert code == 2 and "--learn-mask: no segmentation model fpn-test_resnet (--backbone resnet18" in err
    assert "Traceback" not in err and not (folder / "t.pt").exists()
    code, _, err = run_captured(capsys, "score", *tiny)
    assert code == 0 and "no segmentation model fpn-test_resnet" in err and "plain regression CNN" in err
    assert not load_quality_model(folder / "t.pt")[1].learn_mask
    # by default a mask regressor starts from the segmenter; without one to start from, the plain CNN
    code, _, err = run_captured(capsys, "score", *tiny[:-2], "--overwrite")
    assert code == 0 and "no segmenter weights to start from (--init-from): a plain regression CNN" in err
    assert not load_quality_model(folder / "t.pt")[1].learn_mask
    code, _, err = run_captured(capsys, "score", *tiny[:-2], "--overwrite", "--learn-mask", "--input-size", "32")
    assert code == 0, err  # asked for: a mask regressor from random weights; seg-unc trains on every case
    meta = load_quality_model(folder / "t.pt")[1]
    assert meta.learn_mask and meta.training["n_val"] == 0


def test_learn_mask_refuses_volumes(tmp_path, monkeypatch, capsys) -> None:
    write_chain(tmp_path, n=6, shape=(8, 8, 8))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_captured(capsys, "score", "--framework", "seg-unc", "--learn-mask", "--measure", "entropy",
                                "--cv", "2", "--epochs", "1", "--device", "cpu")
    assert code == 2 and "--learn-mask: the mask regressor is 2D" in err and "Traceback" not in err
