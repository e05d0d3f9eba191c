"""Deep ensemble: one sample per member; identical members give zero epistemic uncertainty."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.bayes.toys import ToySeg, chunks_slices, restore_slices
from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.ensemble import sample_ensemble
from uqseg_cli.bayes.measures import SampleSums, uncertainty_maps


def _ens(models, vol):
    acc = SampleAccumulator(3, tuple(vol.shape[1:]), len(models), (1.0, 1.0, 1.0), sum_dtype=torch.float64)
    sample_ensemble(models, chunks_slices(vol, 2), restore_slices, acc)
    return acc


def test_identical_members_zero_mi_and_epkl() -> None:
    m = ToySeg(dims=2, p=0.5)  # dropout is off in the ensemble
    vol = torch.randn(1, 3, 8, 8)
    maps = uncertainty_maps(_ens([m, copy.deepcopy(m), copy.deepcopy(m)], vol).sums())
    assert float(maps["mutual_information"].max()) < 1e-9
    assert float(maps["epkl"].max()) < 1e-9
    assert float(maps["entropy"].max()) > 1e-2


def test_members_sum_equals_stacked_reference() -> None:
    models = [ToySeg(dims=2, seed=s) for s in range(3)]
    vol = torch.randn(1, 5, 8, 8)
    acc = _ens(models, vol)
    with torch.no_grad():
        ref = torch.stack([torch.log_softmax(m.eval()(vol[0][:, None]), 1).transpose(0, 1) for m in models])
    sums = SampleSums.from_samples(ref.double(), log=True)
    torch.testing.assert_close(acc.sum_p, sums.sum_p, rtol=0, atol=1e-6)
    torch.testing.assert_close(acc.sum_logp, sums.sum_logp, rtol=1e-6, atol=1e-6)
    assert float(uncertainty_maps(acc.sums())["mutual_information"].max()) > 1e-3
    with pytest.raises(ValueError, match="expects 3 samples"):
        sample_ensemble(models[:2], [], restore_slices, acc)
