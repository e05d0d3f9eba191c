"""MC dropout: encoder caching = full passes for the same masks; reproducible; dropout-only stochasticity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.bayes.toys import ToySeg, chunks_slices, chunks_whole, restore_slices, restore_whole
from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.mc_dropout import SeededDropout, can_cache_encoder, find_dropout, sample_mc_dropout
from uqseg_cli.bayes.measures import uncertainty_maps
from uqseg_cli.rng import case_generator

torch.set_num_threads(1)


def _run(model, image, T, *, cache=None, max_batch=None, slices=None, seed=0, case="c1"):
    shape = tuple(image.shape[1:])
    kept = np.zeros((T, 3, *shape), dtype=np.float32)

    def sink(t0, index, probs):
        kept[(slice(t0, t0 + probs.shape[0]), slice(None), *index)] = probs.numpy()

    acc = SampleAccumulator(3, shape, T, (1.0,) * len(shape), sample_sink=sink)
    if slices is None:
        chunks, restore = chunks_whole(image), restore_whole
    else:
        chunks, restore = chunks_slices(image, slices), restore_slices
    info = sample_mc_dropout(model, chunks, restore, acc, generator=case_generator(seed, case, "mcdropout"),
                             max_batch=max_batch, cache_encoder=cache)
    return acc.result(), kept, info


def test_cached_equals_full_passes_2d() -> None:
    model = ToySeg(dims=2)
    image = torch.randn(1, 12, 10)
    r_cache, s_cache, i_cache = _run(model, image, 6, max_batch=4)
    r_full, s_full, i_full = _run(model, image, 6, cache=False, max_batch=1)
    assert (i_cache.mode, i_full.mode) == ("cached", "full")
    np.testing.assert_allclose(s_cache, s_full, rtol=0, atol=1e-6)
    np.testing.assert_allclose(r_cache.sum_p, r_full.sum_p, rtol=0, atol=1e-5)
    # the samples really differ from each other (dropout is on) ...
    assert np.abs(s_cache[0] - s_cache[1]).max() > 1e-3
    # ... and the identity of a sample does not depend on the grouping
    np.testing.assert_allclose(_run(model, image, 6, max_batch=6)[1], s_cache, rtol=0, atol=1e-6)


def test_slicewise_batch_size_independent_and_cached_equals_full() -> None:
    model = ToySeg(dims=2)
    vol = torch.randn(1, 5, 8, 8)
    _, a, _ = _run(model, vol, 4, slices=2, max_batch=3)
    _, b, _ = _run(model, vol, 4, slices=3, cache=False, max_batch=2)
    _, c, _ = _run(model, vol, 4, slices=5, max_batch=4)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a, c, rtol=0, atol=1e-6)
    # different slices get different masks: compare dropout effect on identical slices
    vol_same = vol[:, :1].repeat(1, 5, 1, 1)
    _, d, _ = _run(model, vol_same, 4, slices=5)
    assert np.abs(d[:, :, 0] - d[:, :, 1]).max() > 1e-3


def test_3d_model_cached_equals_full() -> None:
    model = ToySeg(dims=3)
    vol = torch.randn(1, 4, 6, 6)
    _, a, _ = _run(model, vol, 3, max_batch=3)
    _, b, info = _run(model, vol, 3, cache=False, max_batch=1)
    assert info.mode == "full"
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_reproducible_per_case_seed_and_case() -> None:
    model = ToySeg(dims=2)
    image = torch.randn(1, 8, 8)
    a = _run(model, image, 5)[0]
    b = _run(model, image, 5)[0]
    assert np.array_equal(a.sum_p, b.sum_p) and np.array_equal(a.sum_logp, b.sum_logp)
    assert np.array_equal(a.sum_entropy, b.sum_entropy) and np.array_equal(a.volumes, b.volumes)
    assert not np.array_equal(a.sum_p, _run(model, image, 5, seed=1)[0].sum_p)
    assert not np.array_equal(a.sum_p, _run(model, image, 5, case="c2")[0].sum_p)


def test_zero_dropout_gives_zero_epistemic_uncertainty() -> None:
    model = ToySeg(dims=2, p=0.0)
    assert find_dropout(model) == []
    res = _run(model, torch.randn(1, 9, 7), 8)[0]
    maps = uncertainty_maps(res.sums())
    assert float(maps["mutual_information"].max()) < 1e-6
    assert float(maps["epkl"].max()) < 1e-6
    assert float(maps["entropy"].max()) > 1e-2  # the prediction itself is not certain


def test_dropout_semantics_rate_scale_and_eval_batchnorm() -> None:
    """Masks drop a fraction p of units, scale the rest by 1/(1-p); batch norm keeps its running stats."""
    p = 0.3

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)
            self.drop = nn.Dropout(p)

        def forward(self, x):
            return self.drop(self.bn(x))

    m = Probe().eval()
    x = torch.randn(1, 4, 5000) + 3.0
    ref = m.bn(x)  # eval-mode batch norm
    with SeededDropout(m, seed=123) as sd:
        outs = []
        for t in range(3):
            sd.set_batch([(t, ("region", (), 0))])
            outs.append(m(x))
    assert not m.training and not m.bn.training
    for y in outs:
        kept = y != 0
        assert abs(1 - kept.float().mean().item() - p) < 0.02  # ~60000 Bernoulli draws
        torch.testing.assert_close(y[kept], ref[kept] / (1 - p))
    assert not torch.equal(outs[0] != 0, outs[1] != 0)


def test_encoder_dropout_falls_back_to_full_passes() -> None:
    model = ToySeg(dims=2, dropout_in_encoder=True)
    assert not can_cache_encoder(model)
    image = torch.randn(1, 8, 8)
    _, s, info = _run(model, image, 3)
    assert info.mode == "full" and info.dropout_modules == 3
    assert np.abs(s[0] - s[1]).max() > 1e-3
    with pytest.raises(ValueError, match="cannot cache"):
        _run(model, image, 3, cache=True)
    with pytest.raises(RuntimeError, match="inside encode"):
        _run(ToySeg(dims=2, dropout_in_encoder=True, lie=True), image, 3)


def test_alpha_dropout_refused() -> None:
    with pytest.raises(ValueError, match="unsupported dropout"):
        find_dropout(nn.Sequential(nn.AlphaDropout(0.2)))
