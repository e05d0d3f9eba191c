"""TTA: invertible transforms, exact inversion before accumulation, zero uncertainty for equivariant models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.bayes.toys import Pointwise, ToySeg, chunks_slices, chunks_whole, restore_slices, restore_whole
from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.measures import SampleSums, uncertainty_maps
from uqseg_cli.bayes.tta import TRANSFORMS_2D, TRANSFORMS_3D, draw_intensity, sample_tta
from uqseg_cli.rng import case_generator

torch.set_num_threads(1)


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 3, 4, 7)])
def test_2d_transforms_invert_and_are_distinct(shape) -> None:
    x = torch.randn(shape)
    outs = []
    for tf in TRANSFORMS_2D:
        y = tf.apply(x)
        assert tuple(y.shape) == tf.out_shape(tuple(x.shape))
        assert torch.equal(tf.invert(y), x), tf.name
        outs.append(y)
    if shape[-1] == shape[-2]:
        assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    # the named transforms do what their names say (numpy as the reference)
    a = x.numpy()
    ref = {
        "identity": a, "flip-w": a[..., ::-1], "flip-h": a[..., ::-1, :], "rot180": a[..., ::-1, ::-1],
        "transpose": np.swapaxes(a, -1, -2), "rot90": np.rot90(a, 1, axes=(-2, -1)),
        "rot270": np.rot90(a, 3, axes=(-2, -1)), "anti-transpose": np.swapaxes(a, -1, -2)[..., ::-1, ::-1],
    }
    for tf, y in zip(TRANSFORMS_2D, outs, strict=True):
        np.testing.assert_array_equal(y.numpy(), ref[tf.name], err_msg=tf.name)


def test_3d_transforms_invert_and_are_distinct() -> None:
    x = torch.randn(1, 2, 3, 4, 5)
    outs = []
    for tf in TRANSFORMS_3D:
        y = tf.apply(x)
        assert torch.equal(tf.invert(y), x), tf.name
        assert y.shape == x.shape
        outs.append(tuple(y.flatten().tolist()))
    assert len(set(outs)) == 8


def _tta(model, image, T, *, slices=None, intensity=0.0, seed=0, max_batch=None):
    shape = tuple(image.shape[1:])
    acc = SampleAccumulator(3, shape, T, (1.0,) * len(shape), sum_dtype=torch.float64)
    chunks, restore = (chunks_whole(image), restore_whole) if slices is None else (
        chunks_slices(image, slices), restore_slices)
    names = sample_tta(model, chunks, restore, acc, generator=case_generator(seed, "c", "tta"),
                       intensity=intensity, max_batch=max_batch)
    return acc, names


@pytest.mark.parametrize("dims,shape", [(2, (2, 6, 9)), (3, (2, 4, 5, 6))])
def test_equivariant_model_gives_zero_tta_uncertainty(dims, shape) -> None:
    image = torch.randn(shape)
    acc, names = _tta(Pointwise(dims=dims), image, 8, max_batch=3)
    assert len(set(names)) == 8
    maps = uncertainty_maps(acc.sums())
    assert float(maps["mutual_information"].max()) < 1e-6
    assert float(maps["epkl"].max()) < 1e-6
    # a model that is not equivariant (3x3 convs) does show TTA uncertainty
    toy = ToySeg(dims=dims, cin=2, p=0.0)
    maps2 = uncertainty_maps(_tta(toy, image, 8)[0].sums())
    assert float(maps2["mutual_information"].max()) > 1e-4


def test_sums_equal_manual_transform_invert_reference() -> None:
    """Brute force: for every transform, invert(model(apply(x))) -> log_softmax, stacked, summed in one shot."""
    model = ToySeg(dims=2, cin=1, p=0.0)
    vol = torch.randn(1, 3, 6, 10)  # slice-wise, non-square slices (rotations change the shape)
    acc, _ = _tta(model, vol, 8, slices=2, max_batch=8)
    samples = []
    with torch.no_grad():
        for tf in TRANSFORMS_2D:
            slices = vol[0][:, None]  # (D, 1, H, W)
            logits = tf.invert(model(tf.apply(slices)))  # (D, K, H, W)
            samples.append(torch.log_softmax(logits, 1).transpose(0, 1).double())
    ref = SampleSums.from_samples(torch.stack(samples), log=True)
    torch.testing.assert_close(acc.sum_p, ref.sum_p, rtol=0, atol=1e-5)
    torch.testing.assert_close(acc.sum_entropy, ref.sum_entropy, rtol=0, atol=1e-5)


def test_intensity_jitter_deterministic_and_needed_beyond_8() -> None:
    model = ToySeg(dims=2, p=0.0)
    image = torch.randn(1, 8, 8)
    with pytest.raises(ValueError, match="only 8"):
        _tta(model, image, 9)
    a, names = _tta(model, image, 12, intensity=0.1)
    b, _ = _tta(model, image, 12, intensity=0.1)
    c, _ = _tta(model, image, 12, intensity=0.1, seed=5)
    assert names[8] == "identity" and len(names) == 12
    assert torch.equal(a.sum_p, b.sum_p)
    assert not torch.equal(a.sum_p, c.sum_p)
    ab = draw_intensity(1000, 0.1, torch.Generator().manual_seed(0))
    assert ab[:, 0].min() >= 0.9 and ab[:, 0].max() <= 1.1 and ab[:, 1].abs().max() <= 0.1
    assert ab[:, 0].std() > 0.03
    assert torch.equal(draw_intensity(3, 0.0, torch.Generator()), torch.tensor([[1.0, 0.0]] * 3, dtype=torch.float64))
