"""Grad-CAM against analytic references (CAM of a GAP + linear head) and toy regressors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from uqseg_cli.errors import UqsegError
from uqseg_cli.explain.gradcam import (
    cam_from_activations,
    default_layer,
    grad_cam,
    normalize_map,
    resize_map,
    spatial_layers,
    top_slices,
)


class GapRegressor(nn.Module):
    """features -> global average pool -> linear: Grad-CAM of `features` equals CAM (Zhou et al. 2016) / (h w)."""

    def __init__(self, cin: int = 2, width: int = 5, dims: int = 2, inplace: bool = False):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.features = nn.Sequential(conv(cin, width, 3, padding=1), nn.ReLU(inplace=inplace))
        self.pool = pool
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))[:, 0]


class LeftMasked(nn.Module):
    """A regressor whose output depends only on the left half of the image (the right half is zeroed first)."""

    def __init__(self, dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.features = nn.Sequential(
            conv(1, 6, 3, padding=1, bias=False), nn.ReLU(), conv(6, 6, 3, padding=1, bias=False), nn.ReLU()
        )
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        w = x.shape[-1]
        mask = torch.zeros_like(x)
        mask[..., : w // 2] = 1
        f = self.features(x * mask)
        return self.head(f.flatten(2).mean(2))[:, 0]


class LeftCrop(nn.Module):
    """Features everywhere, but the head reads only the left half of the feature map."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        f = self.features(x)
        return self.head(f[..., : f.shape[-1] // 2].flatten(2).mean(2))[:, 0]


def _seeded(module: nn.Module, seed: int = 0, positive: bool = False) -> nn.Module:
    """Random normal weights; `positive`: all weights >= 0, so the output grows with every activation."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            nn.init.normal_(p, std=0.5)
            if positive:
                p.abs_()
    return module.eval()


def left_fraction(cam: torch.Tensor) -> float:
    w = cam.shape[-1]
    return float(cam[..., : w // 2].sum() / cam.sum())


def test_gap_regressor_equals_cam_reference():
    torch.manual_seed(1)
    model = _seeded(GapRegressor(), 1)
    x = torch.randn(3, 2, 12, 10)
    res = grad_cam(model, x, layer="features")
    a = model.features(x).detach()  # (N, C, h, w)
    w = model.head.weight.detach()[0]
    ref = torch.relu(torch.einsum("nchw,c->nhw", a, w)) / (a.shape[2] * a.shape[3])
    assert res.cam.shape == (3, 12, 10)
    torch.testing.assert_close(res.cam, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res.output, model(x).detach())
    assert res.layer == "features" and res.layer_shape == (3, 5, 12, 10)
    low = grad_cam(model, x, layer="features", direction="low").cam
    ref_low = torch.relu(-torch.einsum("nchw,c->nhw", a, w)) / (a.shape[2] * a.shape[3])
    torch.testing.assert_close(low, ref_low, rtol=1e-5, atol=1e-7)
    # high and low never both positive at a pixel
    assert float((res.cam * low).max()) == 0.0


def test_inplace_relu_after_hooked_conv_is_handled():
    model = _seeded(GapRegressor(inplace=True), 2)
    x = torch.randn(2, 2, 8, 8)
    res = grad_cam(model, x, layer="features.0")
    conv_out = model.features[0](x).detach()
    pos = (conv_out > 0).float()
    # d y / d conv_out = w_c * 1[conv_out > 0] / (h w); Grad-CAM weights are its spatial mean
    grads = model.head.weight.detach()[0][None, :, None, None] * pos / 64
    ref = torch.relu((grads.mean((2, 3), keepdim=True) * conv_out).sum(1))
    torch.testing.assert_close(res.cam, ref, rtol=1e-5, atol=1e-7)


def test_cam_from_activations_brute_force():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3, 4, 5))
    g = rng.normal(size=(2, 3, 4, 5))
    ref = np.zeros((2, 4, 5))
    ref_hr = np.zeros((2, 4, 5))
    for n in range(2):
        for i in range(4):
            for j in range(5):
                s = sum(g[n, c].mean() * a[n, c, i, j] for c in range(3))
                ref[n, i, j] = max(s, 0.0)
                ref_hr[n, i, j] = max(sum(g[n, c, i, j] * a[n, c, i, j] for c in range(3)), 0.0)
    got = cam_from_activations(torch.from_numpy(a), torch.from_numpy(g)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    got_hr = cam_from_activations(torch.from_numpy(a), torch.from_numpy(g), "hirescam").numpy()
    np.testing.assert_allclose(got_hr, ref_hr, rtol=1e-12)
    with pytest.raises(ValueError):
        cam_from_activations(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_left_half_regressor_puts_mass_left(method):
    model = _seeded(LeftMasked(), 3, positive=True)
    x = torch.rand(4, 1, 16, 16) + 0.1
    res = grad_cam(model, x, method=method)
    assert res.cam.shape == (4, 16, 16)
    assert float(res.cam.sum()) > 0
    for n in range(4):
        assert left_fraction(res.cam[n]) > 0.9
    # two 3x3 convolutions see at most 2 columns past the midline: beyond that the map is exactly zero
    assert float(res.cam[..., 8 + 2 :].abs().sum()) == 0.0


def test_left_half_regressor_3d():
    model = _seeded(LeftMasked(dims=3), 4, positive=True)
    x = torch.rand(2, 1, 6, 8, 10) + 0.1
    res = grad_cam(model, x)
    assert res.cam.shape == (2, 6, 8, 10)
    assert left_fraction(res.cam) > 0.9
    assert float(res.cam[..., 5 + 2 :].abs().sum()) == 0.0


def test_hirescam_localises_a_cropped_head_gradcam_does_not_have_to():
    model = _seeded(LeftCrop(), 5)
    x = torch.rand(2, 1, 16, 16)
    hr = grad_cam(model, x, layer="features", method="hirescam").cam
    assert float(hr[..., 8:].sum()) == 0.0 and float(hr.sum()) > 0


def test_map_is_resized_to_the_input_shape():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )
    _seeded(model, 6)
    x = torch.randn(2, 3, 15, 9)
    res = grad_cam(model, x)
    assert res.layer == "1"  # the last module with a spatial output (the ReLU after the strided conv)
    assert res.layer_shape == (2, 4, 8, 5)
    assert res.cam.shape == (2, 15, 9)
    assert float(res.cam.min()) >= 0


def test_batch_maps_equal_single_maps():
    model = _seeded(GapRegressor(), 7)
    x = torch.randn(3, 2, 8, 8)
    batch = grad_cam(model, x).cam
    for n in range(3):
        torch.testing.assert_close(batch[n], grad_cam(model, x[n : n + 1]).cam[0], rtol=1e-5, atol=1e-7)


def test_default_layer_and_hint_and_errors():
    model = _seeded(GapRegressor(), 8)
    x = torch.randn(1, 2, 8, 8)
    assert default_layer(model, x) == "features"
    names = [n for n, _ in spatial_layers(model, x)]
    assert names == ["features.0", "features.1", "features"]
    model.gradcam_layer = "features.0"
    assert default_layer(model, x) == "features.0"
    with pytest.raises(UqsegError, match="no such module"):
        grad_cam(model, x, layer="nope")
    with pytest.raises(UqsegError, match="not a spatial map"):
        grad_cam(model, x, layer="head")
    with pytest.raises(UqsegError, match="direction"):
        grad_cam(model, x, direction="sideways")
    with pytest.raises(UqsegError, match="--cam"):
        grad_cam(model, x, method="scorecam")
    with pytest.raises(UqsegError, match="expected an input"):
        grad_cam(model, torch.randn(2, 8, 8))


def test_frozen_weights_still_work():
    model = _seeded(GapRegressor(), 9)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 2, 8, 8)
    assert float(grad_cam(model, x).cam.sum()) > 0
    assert all(p.grad is None for p in model.parameters())


def test_resize_normalize_top_slices():
    cam = torch.rand(1, 4, 4)
    torch.testing.assert_close(resize_map(cam, (4, 4)), cam)
    big = resize_map(cam, (8, 8))
    assert big.shape == (1, 8, 8)
    # bilinear resizing keeps a constant map constant
    torch.testing.assert_close(resize_map(torch.full((1, 3, 3), 2.0), (7, 5)), torch.full((1, 7, 5), 2.0))
    m = normalize_map(np.array([[0.0, 2.0], [1.0, 4.0]]))
    np.testing.assert_array_equal(m, np.array([[0, 0.5], [0.25, 1.0]], dtype=np.float32))
    assert normalize_map(np.zeros((2, 2))).max() == 0
    vol = np.zeros((6, 2, 2))
    vol[4] = 3
    vol[1] = 2
    vol[5] = 2
    np.testing.assert_array_equal(top_slices(vol, 2), [1, 4])  # tie 1 vs 5 -> lower index
    np.testing.assert_array_equal(top_slices(vol, 99), np.arange(6))
