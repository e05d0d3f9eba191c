"""``PooledBins`` adds bin rows case by case into exactly the sums pandas' groupby gives on all the rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from uqseg_cli.metrics.evaluation import (
    BIN_COLUMNS,
    POOL_KEYS,
    POOL_SUMS,
    PooledBins,
    pooled_calibration,
)


def _case_rows(rng, case: str, methods=("tta", "mcdropout"), raters=2, bins=5) -> list[dict]:
    rows = []
    for m in methods:
        for r in range(raters):
            for variant, cls, k in (("toplabel", "all", -1), ("class", "background", 0), ("class", "liver", 1),
                                    ("class_fg", "liver", 1)):
                for b in range(bins):
                    # magnitudes from 1e-9 to 1e9: a plain running sum loses bits that Kahan's keeps
                    n = float(rng.integers(0, 10**6)) * 10.0 ** rng.integers(-9, 4)
                    rows.append({"method": m, "case": case, "rater": r, "variant": variant, "class": cls,
                                 "class_index": k, "bin": b, "lower": b / bins, "upper": (b + 1) / bins,
                                 "count": n, "sum_confidence": n * rng.random(), "sum_accuracy": n * rng.random()})
    return rows


def _reference(rows: list[dict]) -> pd.DataFrame:
    """The old way: every row in one frame, summed by pandas."""
    df = pd.DataFrame([tuple(d[c] for c in BIN_COLUMNS) for d in rows], columns=BIN_COLUMNS)
    return df.groupby(POOL_KEYS, sort=True)[POOL_SUMS].sum().reset_index()


def _pooled(cases: list[list[dict]]) -> pd.DataFrame:
    pool = PooledBins()
    for rows in cases:
        pool.add(rows)
    return pool.frame().sort_values(POOL_KEYS).reset_index(drop=True)


def test_sums_are_bitwise_pandas_groupby_sums():
    rng = np.random.default_rng(0)
    cases = [_case_rows(rng, f"c{i:03d}") for i in range(300)]
    # NaN is skipped, an infinity stays infinite (its compensation would be NaN), keys missing in some cases
    cases[5][3]["count"] = np.nan
    cases[7][4]["sum_confidence"] = np.inf
    cases[9] = [d for d in cases[9] if d["rater"] == 0]
    got = _pooled(cases)
    ref = _reference([d for rows in cases for d in rows])
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
    for c in POOL_SUMS:  # bit for bit, not just equal as floats
        assert got[c].to_numpy().tobytes() == ref[c].to_numpy().tobytes()
    # a naive running sum differs from pandas here: the test can tell the two apart
    naive = pd.DataFrame([tuple(d[c] for c in BIN_COLUMNS) for rows in cases for d in rows], columns=BIN_COLUMNS)
    assert not np.array_equal(naive.groupby(POOL_KEYS)["count"].apply(lambda s: float(np.cumsum(s.to_numpy())[-1]))
                              .to_numpy(), ref["count"].to_numpy(), equal_nan=True)
    # and the dataset-level calibration from the pooled sums is the one from all the rows
    all_rows = pd.DataFrame([tuple(d[c] for c in BIN_COLUMNS) for rows in cases for d in rows], columns=BIN_COLUMNS)
    pool = PooledBins()
    for rows in cases:
        pool.add(rows)
    pd.testing.assert_frame_equal(pooled_calibration(pool.frame()), pooled_calibration(all_rows), check_exact=True)


def test_a_key_twice_in_one_batch_is_added_in_order():
    rng = np.random.default_rng(1)
    a, b = _case_rows(rng, "a", methods=("tta",)), _case_rows(rng, "b", methods=("tta",))
    got = _pooled([a + b])
    pd.testing.assert_frame_equal(got, _reference(a + b), check_exact=True)


def test_empty_pool_is_an_empty_frame():
    pool = PooledBins()
    pool.add([])
    assert len(pool) == 0 and pool.frame().empty and list(pool.frame().columns) == POOL_KEYS + POOL_SUMS
