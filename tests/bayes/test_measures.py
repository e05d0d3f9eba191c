"""Uncertainty measures against their brute-force definitions (explicit loops over samples and pairs, float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import entr, rel_entr

from uqseg_cli.bayes import measures as M
from uqseg_cli.bayes.measures import MEASURES, SampleSums, uncertainty_maps


def brute_force(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Definitions, one sample and one pair at a time. samples: (T, K, N) float64 probabilities."""
    T, K, N = samples.shape
    pbar = np.zeros((K, N))
    for t in range(T):
        pbar += samples[t]
    pbar /= T
    h_mean = np.zeros(N)
    for k in range(K):
        h_mean += entr(pbar[k])
    e_h = np.zeros(N)
    for t in range(T):
        for k in range(K):
            e_h += entr(samples[t, k]) / T
    kl_all = np.zeros(N)
    kl_distinct = np.zeros(N)
    for s in range(T):
        for t in range(T):
            kl = np.zeros(N)
            for k in range(K):
                kl += rel_entr(samples[s, k], samples[t, k])
            kl_all += kl
            if s != t:
                kl_distinct += kl
    out = {
        "confidence": pbar.max(0),
        "entropy": h_mean,
        "expected_entropy": e_h,
        "mutual_information": np.maximum(h_mean - e_h, 0.0),
        "epkl": kl_all / T**2,
    }
    if T > 1:
        out["epkl_distinct"] = kl_distinct / (T * (T - 1))
    return out


def random_samples(rng: np.random.Generator, T: int, K: int, N: int, hard: bool = True) -> np.ndarray:
    """Dirichlet samples (T, K, N), with exact 0/1 probabilities in some voxels when ``hard``."""
    alpha = rng.uniform(0.2, 3.0, size=(K, N))
    x = np.stack([np.stack([rng.dirichlet(alpha[:, n]) for n in range(N)], axis=1) for _ in range(T)])
    if hard:
        n_hard = N // 4
        # voxels 0..n_hard-1: every sample is the same one-hot vector (exact 0 and 1, zero uncertainty)
        cls = rng.integers(0, K, size=n_hard)
        x[:, :, :n_hard] = 0.0
        x[:, cls, np.arange(n_hard)] = 1.0
        # next voxels: one class exactly 0 in every sample (finite EPKL), rest renormalised
        sl = slice(n_hard, 2 * n_hard)
        x[:, 0, sl] = 0.0
        x[:, :, sl] /= x[:, :, sl].sum(1, keepdims=True)
        # one voxel where samples disagree with one-hot vectors (infinite KL between samples)
        if T > 1:
            v = 2 * n_hard
            x[:, :, v] = 0.0
            x[0, 0, v] = 1.0
            x[1:, K - 1, v] = 1.0
    return x


@pytest.mark.parametrize("K", [2, 3, 4, 5])
@pytest.mark.parametrize("T", [1, 2, 7])
def test_measures_equal_brute_force(K: int, T: int) -> None:
    rng = np.random.default_rng(100 * K + T)
    x = random_samples(rng, T, K, 40)
    ref = brute_force(x)
    got = uncertainty_maps(x, MEASURES)
    assert set(got) == set(MEASURES)
    for name in MEASURES:
        assert isinstance(got[name], np.ndarray) and got[name].shape == (40,)
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-6, err_msg=name)
    if T > 1:
        got_d = M.epkl(x, pairs="distinct")
        np.testing.assert_allclose(got_d, ref["epkl_distinct"], rtol=0, atol=1e-6)
        assert np.isinf(got["epkl"][2 * (40 // 4)])  # disagreeing one-hot samples: KL is infinite
    # exact zero/one voxels: no uncertainty at all
    n_hard = 40 // 4
    assert np.all(got["confidence"][:n_hard] == 1.0)
    for name in ("entropy", "expected_entropy", "mutual_information", "epkl"):
        assert np.all(got[name][:n_hard] == 0.0), name


@pytest.mark.parametrize("K", [2, 3, 5])
def test_log_input_and_sums_agree_with_probabilities(K: int) -> None:
    rng = np.random.default_rng(K)
    logits = torch.from_numpy(rng.normal(scale=3.0, size=(6, K, 5, 7)))
    logp = torch.log_softmax(logits, dim=1)
    p = logp.exp()
    from_log = uncertainty_maps(logp, log=True)
    from_p = uncertainty_maps(p)
    ref = brute_force(p.reshape(6, K, -1).numpy())
    for name in MEASURES:
        assert isinstance(from_log[name], torch.Tensor) and from_log[name].shape == (5, 7)
        np.testing.assert_allclose(from_log[name].numpy().ravel(), ref[name], atol=1e-6, err_msg=name)
        np.testing.assert_allclose(from_p[name].numpy().ravel(), ref[name], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("K", [2, 4])
def test_epkl_dominates_mi_dominates_zero(K: int) -> None:
    rng = np.random.default_rng(7 + K)
    x = random_samples(rng, 9, K, 300, hard=False)
    # make some voxels nearly identical across samples, where rounding could break the order
    x[:, :, :100] = x[:1, :, :100] * (1 + 1e-12 * rng.normal(size=(9, K, 100)))
    x /= x.sum(1, keepdims=True)
    got = uncertainty_maps(x)
    assert np.all(got["mutual_information"] >= 0)
    assert np.all(got["epkl"] >= got["mutual_information"])
    assert np.all(M.epkl(x, pairs="distinct") >= got["mutual_information"])
    assert np.all(got["entropy"] >= got["mutual_information"])


def test_running_sums_over_chunks_equal_one_shot() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(random_samples(rng, 11, 3, 50))
    one = SampleSums.from_samples(x)
    parts = SampleSums.from_samples(x[:4]) + SampleSums.from_samples(x[4:5]) + SampleSums.from_samples(x[5:])
    assert parts.T == 11
    a, b = uncertainty_maps(one), uncertainty_maps(parts)
    for name in MEASURES:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-12, equal_nan=False)
    torch.testing.assert_close(parts.sum_p, one.sum_p, rtol=0, atol=1e-12)


def test_identical_samples_give_zero_epistemic_uncertainty() -> None:
    rng = np.random.default_rng(5)
    p = random_samples(rng, 1, 4, 64, hard=False)
    x = np.repeat(p, 10, axis=0)
    got = uncertainty_maps(x)
    assert np.max(got["mutual_information"]) < 1e-12
    assert np.max(got["epkl"]) < 1e-12
    np.testing.assert_allclose(got["entropy"], got["expected_entropy"], atol=1e-12)


def test_single_functions_match_batch_and_float32_path() -> None:
    rng = np.random.default_rng(11)
    x = torch.from_numpy(random_samples(rng, 5, 3, 30, hard=False))
    s = SampleSums.from_samples(x)
    allm = uncertainty_maps(s)
    torch.testing.assert_close(M.confidence(s), allm["confidence"])
    torch.testing.assert_close(M.entropy(s), allm["entropy"])
    torch.testing.assert_close(M.expected_entropy(s), allm["expected_entropy"])
    torch.testing.assert_close(M.mutual_information(s), allm["mutual_information"])
    torch.testing.assert_close(M.epkl(s), allm["epkl"])
    f32 = uncertainty_maps(s.to(torch.float32), dtype=torch.float32)
    for name in MEASURES:
        assert f32[name].dtype == torch.float32
        torch.testing.assert_close(f32[name].double(), allm[name], rtol=0, atol=1e-5)
    seg = M.mean_segmentation(s)
    assert seg.dtype == torch.uint8
    assert torch.equal(seg, x.mean(0).argmax(0).to(torch.uint8))


def test_bad_arguments() -> None:
    x = np.full((1, 2, 3), 0.5)
    with pytest.raises(ValueError, match="T >= 2"):
        M.epkl(x, pairs="distinct")
    with pytest.raises(ValueError, match="unknown measure"):
        uncertainty_maps(x, ["variance"])
    with pytest.raises(ValueError, match="pairs"):
        M.epkl(x, pairs="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sum_entropy"):
        SampleSums(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4), 1)


def test_argmax_classes_equals_torch_argmax_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (2, 4, 50), generator=g).double()  # many ties
    for dim in (0, 1):
        assert torch.equal(M.argmax_classes(x, dim).long(), x.argmax(dim))
