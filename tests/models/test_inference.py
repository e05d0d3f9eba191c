"""Predictor: chunks partition the grid, restore maps back exactly, predict_proba matches direct references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uqseg_cli.errors import InputError
from uqseg_cli.models import SegModel, create_model
from uqseg_cli.models.checkpoint import Checkpoint
from uqseg_cli.models.inference import Predictor, tile_axis
from uqseg_cli.models.preprocessing import (
    Preprocessing,
    adapt_channels,
    from_model_2d,
    geometry_2d,
    normalise,
    to_model_2d,
)


class Pointwise(SegModel):
    """1x1 conv: each output voxel depends only on its own input voxel, so tiling must not change anything."""

    def __init__(self, dims, in_channels=1, num_classes=3):
        super().__init__(in_channels, num_classes)
        self.dims, self.size_multiple = dims, 8
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(in_channels, num_classes, 1)
        self.arch, self.init_args = "pointwise", {"num_classes": num_classes}

    def encode(self, x):
        return [x]

    def decode(self, f):
        return self.conv(f[0])

    def encoder_parts(self):
        return []


def ct_prep(size, halo=3):
    return Preprocessing("ct", 1, list(size), "stretch", 1.0, [-100.0, 200.0], [0.4], [0.3], halo)


def ckpt_for(model, prep):
    return Checkpoint(model.arch, model.init_args, prep, [f"c{k}" for k in range(model.num_classes)])


def coverage(chunks, shape):
    count = np.zeros(shape, dtype=int)
    for c in chunks:
        count[c.index] += 1
    return count


@pytest.mark.parametrize("shape", [(1, 37, 51), (1, 7, 37, 51), (1, 20, 45, 70), (1, 8, 8, 8), (1, 33, 9, 17)])
def test_chunks_partition_the_grid(shape):
    torch.manual_seed(0)
    img = np.random.default_rng(0).normal(0, 100, shape).astype(np.float32)
    dims = 3 if len(shape) == 4 else 2
    for model_dims in {2, dims}:
        model = Pointwise(model_dims)
        prep = ct_prep((16, 16, 16) if model_dims == 3 else (32, 48), halo=4)
        p = Predictor(model, ckpt_for(model, prep), batch_size=3)
        chunks = list(p.chunks(img))
        assert (coverage(chunks, shape[1:]) == 1).all()
        for c in chunks:
            model.check_input(c.x.shape)


def test_tile_axis_cores_and_context():
    assert tile_axis(10, 16, 4, 8) == tile_axis(10, 16, 4, 8)
    (a,) = tile_axis(10, 16, 4, 8)
    assert (a.start, a.stop, a.in_start, a.in_size) == (0, 10, 0, 16)
    axes = tile_axis(30, 16, 4, 8)
    assert [(a.start, a.stop, a.in_start) for a in axes] == [(0, 8, -4), (8, 16, 4), (16, 24, 12), (24, 30, 20)]
    assert all(a.in_size == 16 for a in axes)


def test_3d_tiles_equal_the_whole_volume_for_a_pointwise_model():
    torch.manual_seed(0)
    model = Pointwise(3).eval()
    prep = ct_prep((16, 16, 16), halo=4)
    vol = np.random.default_rng(1).normal(50, 100, (1, 21, 30, 19)).astype(np.float32)
    p = Predictor(model, ckpt_for(model, prep))
    assert len(list(p.chunks(vol))) > 8
    got = p.predict_proba(vol)
    with torch.no_grad():
        ref = torch.softmax(model.conv(normalise(vol, prep).unsqueeze(0))[0], dim=0)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_2d_model_on_a_volume_is_slice_by_slice():
    torch.manual_seed(0)
    model = create_model("unet-small", in_channels=1, num_classes=2, channels=(4, 8)).eval()
    prep = ct_prep((24, 32))
    vol = np.random.default_rng(2).normal(50, 100, (1, 5, 24, 32)).astype(np.float32)
    p = Predictor(model, ckpt_for(model, prep), batch_size=2)
    got = p.predict_proba(vol)
    for z in range(5):
        with torch.no_grad():
            ref = torch.softmax(model(normalise(vol[:, z], prep).unsqueeze(0))[0], dim=0)
        torch.testing.assert_close(got[:, z], ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p.predict_proba(vol[:, z]), ref, rtol=1e-5, atol=1e-6)


def test_odd_sizes_map_back_to_the_input_grid():
    torch.manual_seed(0)
    model = create_model("unet-small", in_channels=3, num_classes=3, channels=(4, 8, 16)).eval()
    for resize in ("stretch", "letterbox"):
        prep = Preprocessing(input_size=[32, 48], resize=resize)
        p = Predictor(model, ckpt_for(model, prep))
        img = np.random.default_rng(3).integers(0, 256, (3, 37, 23), dtype=np.uint8)
        prob = p.predict_proba(img)
        assert prob.shape == (3, 37, 23)
        torch.testing.assert_close(prob.sum(0), torch.ones(37, 23))
        # the reference: resize, forward, resize the logits back, softmax
        geo = geometry_2d((37, 23), (32, 48), resize)
        x = normalise(img, prep).unsqueeze(0)
        inner = F.interpolate(x, size=geo.inner, mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            logits = model(to_model_2d(x, geo, torch.zeros(3) - torch.tensor(prep.mean) / torch.tensor(prep.std)))
        oy, ox = geo.offset
        crop = logits[..., oy : oy + geo.inner[0], ox : ox + geo.inner[1]]
        ref = torch.softmax(F.interpolate(crop, size=(37, 23), mode="bilinear", align_corners=False)[0], 0)
        torch.testing.assert_close(prob, ref, rtol=1e-5, atol=1e-6)
        assert inner.shape[-2:] == geo.inner


def test_letterbox_geometry_keeps_aspect_and_centres():
    g = geometry_2d((100, 50), (64, 64), "letterbox")
    assert g.inner == (64, 32) and g.offset == (0, 16)
    g = geometry_2d((286, 383), (192, 256), "letterbox")
    assert g.inner == (191, 256) and g.offset == (0, 0)
    g = geometry_2d((286, 383), (192, 256), "stretch")
    assert g.inner == (192, 256) and g.offset == (0, 0)
    # padding really is the "black" value and the crop on the way back removes it
    x = torch.ones(1, 1, 100, 50)
    y = to_model_2d(x, geometry_2d((100, 50), (64, 64), "letterbox"), torch.tensor([-7.0]))
    assert (y[..., :, :16] == -7).all() and (y[..., :, 48:] == -7).all()
    torch.testing.assert_close(y[..., :, 16:48], torch.ones(1, 1, 64, 32))
    back = from_model_2d(y, geometry_2d((100, 50), (64, 64), "letterbox"))
    torch.testing.assert_close(back, x)


@pytest.mark.parametrize("kind", ["image", "slices", "tile"])
def test_restore_keeps_leading_sample_dims(kind):
    torch.manual_seed(0)
    if kind == "tile":
        model, prep, img = Pointwise(3), ct_prep((16, 16, 16), 4), np.zeros((1, 20, 9, 11), np.float32)
    else:
        model = create_model("unet-small", in_channels=1, num_classes=3, channels=(4, 8))
        prep = ct_prep((16, 24))
        img = np.zeros((1, 13, 21), np.float32) if kind == "image" else np.zeros((1, 4, 13, 21), np.float32)
    p = Predictor(model, ckpt_for(model, prep), batch_size=3)
    chunk = next(iter(p.chunks(img)))
    n = chunk.x.shape[0]
    logits = torch.randn(5, n, 3, *chunk.x.shape[2:])
    out = p.restore(logits, chunk)
    region = tuple(s.stop - s.start for s in chunk.index)
    assert out.shape == (5, 3, *region)
    for t in range(5):
        torch.testing.assert_close(out[t], p.restore(logits[t], chunk))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(5, *region))


def test_normalise_and_channels():
    prep = Preprocessing(mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 1.0])
    img = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(3, 2, 4) * 10
    ref = (img.astype(np.float64) / 255 - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array([0.5, 0.25, 1])[
        :, None, None
    ]
    np.testing.assert_allclose(normalise(img, prep).numpy(), ref, rtol=1e-5)
    ct = ct_prep((8, 8))
    v = np.array([[[-500.0, -100.0, 50.0, 200.0, 900.0]]], np.float32)
    np.testing.assert_allclose(normalise(v, ct).numpy(), ((np.clip(v, -100, 200) + 100) / 300 - 0.4) / 0.3, rtol=1e-6)
    grey = np.ones((1, 2, 2), np.uint8)
    assert adapt_channels(grey, 3).shape == (3, 2, 2)
    assert adapt_channels(np.ones((4, 2, 2)), 3).shape == (3, 2, 2)
    with pytest.raises(InputError, match="2 channel"):
        adapt_channels(np.ones((2, 2, 2)), 3, "x.png")


def test_3d_model_refuses_a_2d_image():
    model = Pointwise(3)
    p = Predictor(model, ckpt_for(model, ct_prep((16, 16, 16))))
    with pytest.raises(InputError, match="needs a volume"):
        p.predict_proba(np.zeros((1, 10, 10), np.float32), "c1")


@pytest.mark.parametrize("name", ["unet-small", "fpn-resnet18", "fpn-resnet50", "swin-unet", "unet3d-small"])
def test_every_model_maps_odd_sizes_back_to_the_input_grid(name):
    torch.manual_seed(0)
    kw = {"img_size": (64, 96)} if name == "swin-unet" else {}
    model = create_model(name, in_channels=1, num_classes=3, **kw)
    if model.dims == 3:
        prep, img = ct_prep((16, 16, 16), halo=3), np.zeros((1, 11, 19, 21), np.float32)
    else:
        prep, img = ct_prep((64, 96)), np.zeros((1, 37, 53), np.float32)
    img += np.random.default_rng(0).normal(0, 100, img.shape).astype(np.float32)
    prob = Predictor(model, ckpt_for(model, prep)).predict_proba(img)
    assert prob.shape == (3, *img.shape[1:])
    torch.testing.assert_close(prob.sum(0), torch.ones(img.shape[1:]))
