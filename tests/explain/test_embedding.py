"""UMAP wrapper: determinism, small n, structure; long feature table -> case matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import zscore

from uqseg_cli.errors import UqsegError
from uqseg_cli.explain.embedding import (
    effective_neighbors,
    feature_matrix,
    standardize_columns,
    umap_embed,
)


def test_deterministic_for_fixed_seed_one_row_per_case():
    X = np.random.default_rng(0).normal(size=(12, 8))
    a = umap_embed(X, seed=3)
    b = umap_embed(X, seed=3)
    assert a.shape == (12, 2)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()
    c = umap_embed(X, seed=4)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("n", [3, 4, 5])
def test_small_numbers_of_cases(n):
    X = np.random.default_rng(n).normal(size=(n, 6))
    out = umap_embed(X, seed=0, n_neighbors=15)
    assert out.shape == (n, 2) and np.isfinite(out).all()
    for _ in range(2):  # umap-learn's spectral init alternated between two layouts at n = 4
        np.testing.assert_array_equal(out, umap_embed(X, seed=0, n_neighbors=15))


def test_deterministic_with_disconnected_neighbour_graph():
    X = np.random.default_rng(22).normal(size=(8, 6))
    X[:4, 0] += 100  # two far-apart groups: with 2 neighbours the graph has several components
    out = umap_embed(X, seed=0, n_neighbors=2)
    for _ in range(2):
        np.testing.assert_array_equal(out, umap_embed(X, seed=0, n_neighbors=2))


def test_too_few_or_bad_values():
    with pytest.raises(UqsegError, match="at least 3"):
        umap_embed(np.zeros((2, 4)))
    X = np.ones((5, 2))
    X[0, 0] = np.nan
    with pytest.raises(UqsegError, match="non-finite"):
        umap_embed(X)
    with pytest.raises(ValueError):
        umap_embed(np.zeros(5))


def test_effective_neighbors():
    assert effective_neighbors(3, 15) == 2
    assert effective_neighbors(10, 15) == 9
    assert effective_neighbors(100, 15) == 15
    assert effective_neighbors(100, 1) == 2


def test_standardize_columns_matches_scipy_zscore():
    X = np.random.default_rng(2).normal(size=(7, 3)) * [1.0, 1e3, 1e-3]
    X = np.hstack([X, np.full((7, 1), 4.0)])
    got = standardize_columns(X)
    np.testing.assert_allclose(got[:, :3], zscore(X[:, :3], axis=0, ddof=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[:, 3], 0.0)


def test_two_clusters_stay_apart():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.1, size=(10, 3))
    b = rng.normal(0, 0.1, size=(10, 3))
    b[:, 0] += 5
    X = np.vstack([a, b])
    emb = umap_embed(X, seed=0, n_neighbors=5)
    within = max(cdist(emb[:10], emb[:10]).max(), cdist(emb[10:], emb[10:]).max())
    between = cdist(emb[:10], emb[10:]).min()
    assert between > within


def test_feature_matrix_pivots_long_table():
    rows = []
    for case, base in [("b", 2.0), ("a", 1.0), ("c", 3.0)]:
        for method in ["tta", "mcdropout"]:
            for region in ["image", "foreground"]:
                rows.append(
                    {
                        "case": case,
                        "method": method,
                        "measure": "entropy",
                        "region": region,
                        "mean": base * (2 if method == "tta" else 1) + (0.5 if region == "image" else 0),
                        "volume": 7.0,  # constant: dropped
                    }
                )
    table = pd.DataFrame(rows)
    ids, X, names = feature_matrix(table)
    assert ids == ["a", "b", "c"]
    assert sorted(names) == sorted(
        ["mcdropout/entropy/foreground/mean", "mcdropout/entropy/image/mean", "tta/entropy/foreground/mean",
         "tta/entropy/image/mean"]
    )
    for i, case in enumerate(ids):
        for j, name in enumerate(names):
            method, measure, region, stat = name.split("/")
            ref = table[(table.case == case) & (table.method == method) & (table.region == region)][stat]
            assert X[i, j] == float(ref.iloc[0])
    ids2, X2, names2 = feature_matrix(table, method="tta")
    assert ids2 == ids and all(n.startswith("tta/") for n in names2) and X2.shape == (3, 2)
    with pytest.raises(UqsegError, match="method = 'ensemble'"):
        feature_matrix(table, method="ensemble")
    with pytest.raises(UqsegError, match="duplicate"):
        feature_matrix(pd.concat([table, table.iloc[:1]]))
    with pytest.raises(UqsegError, match="no 'case'"):
        feature_matrix(table.drop(columns="case"))


def test_feature_matrix_aggregate_long_format():
    rows = [{"case": c, "method": "tta", "measure": m, "region": r, "value": v}
            for c, base in (("p", 1.0), ("q", 2.0), ("r", 4.0))
            for m in ("entropy", "volume") for r, v in (("image", base), ("foreground", base * base))]
    ids, X, names = feature_matrix(pd.DataFrame(rows))
    assert ids == ["p", "q", "r"]
    assert sorted(names) == ["tta/entropy/foreground", "tta/entropy/image", "tta/volume/foreground", "tta/volume/image"]
    j = names.index("tta/entropy/foreground")
    np.testing.assert_array_equal(X[:, j], [1.0, 4.0, 16.0])


def test_feature_matrix_wide_table_and_missing_columns():
    table = pd.DataFrame({"case": ["x", "y", "z"], "f1": [1.0, 2.0, 4.0], "f2": [1.0, np.nan, 2.0]})
    ids, X, names = feature_matrix(table)
    assert ids == ["x", "y", "z"] and names == ["f1"]
    np.testing.assert_array_equal(X[:, 0], [1.0, 2.0, 4.0])
