"""`evaluate_case` reads its arrays in slabs along the first spatial axis: a tiny slab size (many slabs) must give
the same metric rows and calibration bins as one slab (to float rounding of the sums), for 2D and 3D cases and
the curvas2024 protocol, from numpy arrays and from h5py datasets alike; bad values in a late slab give the same
message as the whole-case check."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from uqseg_cli.metrics.evaluation import CaseInput, EvalOptions, ScaledArray, evaluate_case

NAMES = ["bg", "a", "b"]


def _case(shape, seed=0, k=3, n_raters=3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, *shape)) * 2
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    p = p.astype(np.float32)
    p[:, rng.random(shape) < 0.05] = np.eye(k, dtype=np.float32)[0][:, None]  # top-label confidence exactly 1
    truth = p.argmax(0)
    raters = np.stack(
        [np.where(rng.random(shape) < 0.7, truth, rng.integers(0, k, shape)) for _ in range(n_raters)]
    ).astype(np.uint8)
    image = np.full((1, *shape), -1000.0, np.float32)
    image[(0, *(slice(None),) * (len(shape) - 2), slice(2, shape[-2] - 3), slice(1, shape[-1] - 2))] = 40.0
    return p, raters, image


def _assert_same(one, many):
    (r1, b1), (r2, b2) = one, many
    a, b = pd.DataFrame(r1), pd.DataFrame(r2)
    assert list(a.columns) == list(b.columns) and a.shape == b.shape
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-12)
    ba, bb = pd.DataFrame(b1), pd.DataFrame(b2)
    pd.testing.assert_frame_equal(ba, bb, check_exact=False, rtol=1e-12, atol=1e-12)
    assert (ba["count"] == bb["count"]).all()


@pytest.mark.parametrize("shape", [(7, 12, 11), (21, 17)], ids=["3d", "2d"])
@pytest.mark.parametrize("protocol", ["uqseg", "curvas2024"])
def test_many_slabs_equal_one_slab(shape, protocol):
    p, raters, image = _case(shape)
    opts = (
        EvalOptions(n_bins=50, crps_modes=("curvas",), protocol="curvas2024")
        if protocol == "curvas2024"
        else EvalOptions(n_bins=15, crps_modes=("gaussian", "curvas"))
    )
    inp = CaseInput("c", "m", p, raters, (1.5,) * len(shape), image=image)
    one = evaluate_case(inp, NAMES, opts, slab_voxels=10**9)
    for slab in (1, 40):  # one row / slice per slab, and slabs of a few rows / slices
        _assert_same(one, evaluate_case(inp, NAMES, opts, slab_voxels=slab))


def test_h5py_datasets_and_scaled_sums_read_slab_by_slab(tmp_path):
    p, raters, image = _case((6, 10, 9), seed=3)
    t = 4
    seg = np.argmax(p, axis=0).astype(np.uint8)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["p"], f["sum_p"], f["r"], f["s"], f["img"] = p, p * np.float32(t), raters, seg, image
        opts = EvalOptions(n_bins=50, crps_modes=("curvas",), protocol="curvas2024")
        want = evaluate_case(CaseInput("c", "m", p, raters, (1.0, 1.0, 1.0), seg, image), NAMES, opts, 10**9)
        got = evaluate_case(CaseInput("c", "m", f["p"], f["r"], (1.0, 1.0, 1.0), f["s"], f["img"]), NAMES, opts, 50)
        _assert_same(want, got)
        mean_p = (p * np.float32(t)).astype(np.float64) / t
        want = evaluate_case(CaseInput("c", "m", mean_p, raters, (1.0, 1.0, 1.0)), NAMES, EvalOptions(), 10**9)
        got = evaluate_case(CaseInput("c", "m", ScaledArray(f["sum_p"], t), f["r"], (1.0, 1.0, 1.0)), NAMES,
                            EvalOptions(), 30)
        _assert_same(want, got)


def test_bad_values_in_a_late_slab_report_the_whole_case():
    p, raters, _ = _case((6, 5, 4), seed=1)
    p = p.astype(np.float64)
    r = raters.copy()
    r[1, 5, 0, 0] = 7
    r[1, 0, 0, 0] = 5
    with pytest.raises(ValueError, match="rater 2 has label 7 but the model has 3 classes"):
        evaluate_case(CaseInput("c", "m", p, r, (1.0, 1.0, 1.0)), NAMES, EvalOptions(), slab_voxels=20)
    q = p.copy()
    q[0, 4, 0, 0] = 1.5
    q[1, 0, 0, 0] = -0.5
    with pytest.raises(ValueError, match=r"outside \[0, 1\] \(range -0.5 .. 1.5\)"):
        evaluate_case(CaseInput("c", "m", q, raters, (1.0, 1.0, 1.0)), NAMES, EvalOptions(), slab_voxels=20)
    q[2, 5, 1, 1] = np.nan  # NaN is checked first, as in the one-array check
    with pytest.raises(ValueError, match="NaN"):
        evaluate_case(CaseInput("c", "m", q, raters, (1.0, 1.0, 1.0)), NAMES, EvalOptions(), slab_voxels=20)
    with pytest.raises(ValueError, match="NaN"):  # value errors come before the missing-image error
        evaluate_case(CaseInput("c", "m", q, raters, (1.0, 1.0, 1.0)), NAMES,
                      EvalOptions(n_bins=50, protocol="curvas2024"), slab_voxels=20)
