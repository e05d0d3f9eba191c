"""The CNN levers: start from the segmenter's encoder, the agreement channel, the losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from uqseg_cli.models.registry import create_model
from uqseg_cli.quality.inputs import channel_names
from uqseg_cli.quality.models import QualityRegressor, init_from_segmenter
from uqseg_cli.quality.training import regression_loss


def test_init_from_segmenter_copies_the_encoder() -> None:
    torch.manual_seed(0)
    seg = create_model("fpn-resnet18", in_channels=3, num_classes=2)
    q = QualityRegressor("resnet18", in_chans=5, dims=2)
    state = seg.state_dict()
    n = init_from_segmenter(q, state, image_channels=3)
    own = q.backbone.state_dict()
    enc = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    assert n == len(enc)  # every encoder tensor has a home in the regressor
    for name, v in enc.items():
        if name == "conv1.weight":
            w = own[name]
            torch.testing.assert_close(w[:, :3], v * 3 / 5)  # image channels: the segmenter's filters
            torch.testing.assert_close(w[:, 3], v.mean(1) * 3 / 5)  # other channels: their mean
            torch.testing.assert_close(w[:, 4], v.mean(1) * 3 / 5)
        else:
            torch.testing.assert_close(own[name], v)
    # a regressor on another backbone takes nothing
    other = QualityRegressor("resnet34", in_chans=5, dims=2)
    before = {k: v.clone() for k, v in other.backbone.state_dict().items()}
    init_from_segmenter(other, {"backbone.layer9.weight": torch.zeros(1)}, 3)
    assert all(torch.equal(before[k], v) for k, v in other.backbone.state_dict().items())


def test_agreement_channel_name() -> None:
    assert channel_names("seg-unc", 0, 2, ["entropy"], "tta") == ["seg:1", "unc:entropy", "agree:tta"]
    assert channel_names("img-seg-unc", 3, 2, ["entropy"])[-1] == "unc:entropy"


@pytest.mark.parametrize("kind", ["mse", "huber", "mse+pearson"])
def test_losses(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    pred, y = torch.rand(32, generator=g), torch.rand(32, generator=g)
    got = float(regression_loss(pred, y, kind))
    mse = float(np.mean((pred.numpy() - y.numpy()) ** 2))
    if kind == "mse":
        assert got == pytest.approx(mse, rel=1e-6)
    elif kind == "huber":
        d = np.abs(pred.numpy() - y.numpy())
        ref = np.where(d < 0.1, 0.5 * d**2 / 0.1, d - 0.05).mean()
        assert got == pytest.approx(float(F.huber_loss(pred, y, delta=0.1)) / 0.1, rel=1e-5)
        assert got == pytest.approx(ref, rel=1e-5)
    else:
        r = stats.pearsonr(pred.numpy(), y.numpy()).statistic
        assert got == pytest.approx(mse + 0.1 * (1 - r), rel=1e-5)
    with pytest.raises(ValueError):
        regression_loss(pred, y, "l7")
