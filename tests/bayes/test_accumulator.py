"""The accumulator's running sums equal the one-shot sums of the stacked samples, in any order and grouping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uqseg_cli.bayes.accumulator import SampleAccumulator, voxel_volume_ml
from uqseg_cli.bayes.measures import MEASURES, SampleSums, uncertainty_maps


def _logp(T: int, K: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((T, K, *shape), generator=g, dtype=torch.float64) * 4
    logits[:, 0, 0] = -1e4  # probability underflows to exactly 0 in some voxels
    return torch.log_softmax(logits, dim=1)


def _regions(shape):
    """Four non-overlapping regions covering a 3D grid."""
    D, H, W = shape
    return [
        (slice(0, 2), slice(0, H), slice(0, W)),
        (slice(2, D), slice(0, 3), slice(0, W)),
        (slice(2, D), slice(3, H), slice(0, 4)),
        (slice(2, D), slice(3, H), slice(4, W)),
    ]


@pytest.mark.parametrize("K", [2, 4])
def test_sums_volumes_equal_one_shot(K: int) -> None:
    T, shape, spacing = 7, (5, 6, 9), (2.5, 0.8, 0.7)
    logp = _logp(T, K, shape, seed=K)
    acc = SampleAccumulator(K, shape, T, spacing, sum_dtype=torch.float64)
    # regions in reverse order, samples in uneven groups
    groups = [(0, 3), (3, 4), (4, 7)]
    for index in reversed(_regions(shape)):
        for a, b in groups[::-1]:
            acc.add(logp[(slice(a, b), slice(None), *index)], a, index)
    res = acc.result()
    ref = SampleSums.from_samples(logp, log=True)
    np.testing.assert_allclose(res.sum_p, ref.sum_p.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(res.sum_entropy, ref.sum_entropy.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(res.sum_logp, ref.sum_logp.numpy(), rtol=1e-6)
    assert res.sum_p.dtype == np.float32 and res.volumes.dtype == np.float64
    # per-sample volumes by brute force: count voxels of each argmax label, times the voxel volume in ml
    ml = 2.5 * 0.8 * 0.7 / 1000
    p = logp.exp().numpy()
    for t in range(T):
        lab = p[t].argmax(0)
        for k in range(K):
            assert res.volumes[t, k] == pytest.approx(np.sum(lab == k) * ml, rel=1e-12)
            assert res.soft_volumes[t, k] == pytest.approx(p[t, k].sum() * ml, rel=1e-9)
    # measures from the accumulated sums equal the measures of the raw samples
    a, b = uncertainty_maps(acc.sums()), uncertainty_maps(logp, log=True)
    for m in MEASURES:
        torch.testing.assert_close(a[m], b[m], rtol=0, atol=1e-9)


def test_float32_sums_close_to_float64() -> None:
    T, K, shape = 20, 3, (32, 32)
    logp = _logp(T, K, shape)
    acc = SampleAccumulator(K, shape, T, (1.0, 1.0))
    for t in range(T):
        acc.add(logp[t : t + 1], t)
    res = acc.result()
    ref = SampleSums.from_samples(logp, log=True)
    np.testing.assert_allclose(res.sum_p, ref.sum_p.numpy(), rtol=1e-5, atol=1e-5)
    a, b = uncertainty_maps(res.sums()), uncertainty_maps(ref)
    for m in MEASURES:
        np.testing.assert_allclose(a[m].numpy(), b[m].numpy(), atol=5e-5, err_msg=m)


def test_incomplete_or_duplicate_sampling_is_refused() -> None:
    T, K, shape = 3, 2, (4, 4)
    logp = _logp(T, K, shape)
    acc = SampleAccumulator(K, shape, T, (1.0, 1.0))
    acc.add(logp[:2], 0)
    with pytest.raises(RuntimeError, match="incomplete sampling"):
        acc.result()
    acc.add(logp[:1], 0)  # sample 0 twice, sample 2 never: voxel counts are right, per-sample totals are not
    with pytest.raises(RuntimeError, match="incomplete sampling"):
        acc.result()
    with pytest.raises(ValueError, match="outside"):
        acc.add(logp, 1)
    with pytest.raises(ValueError, match="does not match"):
        acc.add(logp[:1], 0, (slice(0, 2), slice(0, 4)))
    with pytest.raises(ValueError, match="spacing"):
        SampleAccumulator(K, shape, T, (1.0,))


def test_sample_sink_gets_every_probability() -> None:
    T, K, shape = 4, 3, (6, 5)
    logp = _logp(T, K, shape)
    kept = np.zeros((T, K, *shape), dtype=np.float32)

    def sink(t0, index, probs):
        kept[(slice(t0, t0 + probs.shape[0]), slice(None), *index)] = probs.numpy()

    acc = SampleAccumulator(K, shape, T, (1.0, 1.0), sample_sink=sink)
    acc.add(logp[:, :, :3], 0, (slice(0, 3), slice(0, 5)))
    acc.add(logp[:, :, 3:], 0, (slice(3, 6), slice(0, 5)))
    acc.result()
    np.testing.assert_allclose(kept, logp.exp().numpy(), rtol=1e-6, atol=1e-7)
    assert voxel_volume_ml((1.0, 1.0)) == 1e-3
