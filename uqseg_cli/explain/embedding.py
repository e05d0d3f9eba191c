"""2-D UMAP embeddings of per-case vectors (the quality regressor's penultimate layer, or a feature table).

umap-learn imports numba (seconds on first import), so it is imported only inside :func:`umap_embed`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from uqseg_cli.errors import UqsegError

MIN_UMAP_CASES = 3  # UMAP needs at least 2 neighbours besides the point itself
KEY_COLUMNS = ("method", "measure", "region")


def effective_neighbors(n_cases: int, n_neighbors: int) -> int:
    """``n_neighbors`` capped at ``n_cases - 1`` (UMAP counts the point itself), at least 2."""
    return max(2, min(int(n_neighbors), int(n_cases) - 1))


def standardize_columns(X: np.ndarray) -> np.ndarray:
    """z-score each column of ``(n, d)`` (population std, ddof=0); constant columns become 0."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def umap_embed(
    X: np.ndarray,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    standardize: bool = False,
) -> np.ndarray:
    """Embed ``X`` ``(n_cases, n_features)`` into 2-D with UMAP; returns ``(n_cases, 2)`` float64.

    Deterministic for a fixed ``seed`` (umap-learn then runs single-threaded). Initialisation is PCA, not
    umap-learn's default spectral layout: with 4 cases, or a k-NN graph of several components, the spectral
    layout differed between identical runs (umap-learn 0.5.12, measured). ``n_neighbors`` is capped at
    ``n_cases - 1`` so a handful of cases works. ``standardize``: z-score each column first (for feature tables whose
    columns have different units; constant columns become 0). Needs at least 3 finite rows.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a (cases, features) matrix, got shape {X.shape}")
    n = X.shape[0]
    if n < MIN_UMAP_CASES:
        raise UqsegError(f"UMAP needs at least {MIN_UMAP_CASES} cases, got {n}")
    if not np.isfinite(X).all():
        raise UqsegError("UMAP: the embedding has non-finite values (nan/inf)")
    if standardize:
        X = standardize_columns(X)
    import umap  # lazy: numba compilation on first import

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=effective_neighbors(n, n_neighbors),
        min_dist=float(min_dist),
        metric=metric,
        random_state=int(seed),
        init="pca",
        n_jobs=1,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        warnings.filterwarnings("ignore", message=".*force_all_finite.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        out = reducer.fit_transform(X)
    return np.asarray(out, dtype=np.float64)


def feature_matrix(
    table: pd.DataFrame, method: str | None = None, measure: str | None = None
) -> tuple[list[str], np.ndarray, list[str]]:
    """One row per case from a long feature table (``features.csv`` of ``uqseg aggregate``).

    ``table`` has a ``case`` column, optional key columns ``method``/``measure``/``region`` (filtered by
    ``method``/``measure`` when given) and numeric value columns (`uqseg aggregate` writes one, ``value``).
    Each (key values, value column) pair becomes one column named ``method/measure/region/<value column>``, or
    ``method/measure/region`` when there is a single value column. Columns with any missing value or no variation are
    dropped. Returns ``(case_ids sorted, X (n_cases, n_columns) float64, column_names)``.
    """
    if "case" not in table.columns:
        raise UqsegError("feature table: no 'case' column")
    t = table.copy()
    t["case"] = t["case"].astype(str)
    for col, want in (("method", method), ("measure", measure)):
        if want is not None and col in t.columns:
            t = t[t[col].astype(str) == want]
            if t.empty:
                raise UqsegError(f"feature table: no rows with {col} = {want!r}")
    keys = [c for c in KEY_COLUMNS if c in t.columns]
    values = [
        c for c in t.columns if c != "case" and c not in keys and pd.api.types.is_numeric_dtype(t[c])
    ]
    values = [c for c in values if c not in {"complete", "train_case"}]
    if not values:
        raise UqsegError("feature table: no numeric feature columns")
    if keys:
        for k in keys:
            t[k] = t[k].astype(str)
        if t.duplicated(["case", *keys]).any():
            raise UqsegError(f"feature table: duplicate rows for (case, {', '.join(keys)})")
        wide = t.pivot(index="case", columns=keys, values=values)
        # wide columns: (value, key1, key2, ...) -> "key1/key2/.../value" ("key1/key2/..." for a single value column)
        if len(values) == 1:
            names = ["/".join(map(str, col[1:])) for col in wide.columns]
        else:
            names = ["/".join([*map(str, col[1:]), str(col[0])]) for col in wide.columns]
    else:
        if t["case"].duplicated().any():
            raise UqsegError("feature table: duplicate case rows")
        wide = t.set_index("case")[values]
        names = list(map(str, values))
    wide.columns = names
    wide = wide.sort_index()
    wide = wide.loc[:, wide.notna().all(axis=0) & (wide.nunique(axis=0) > 1)]
    if wide.shape[1] == 0:
        raise UqsegError("feature table: every feature column is missing somewhere or constant")
    arr = wide.to_numpy(dtype=np.float64)
    if not np.isfinite(arr).all():
        keep = np.isfinite(arr).all(axis=0)
        wide = wide.loc[:, keep]
        arr = arr[:, keep]
    return list(wide.index), arr, list(wide.columns)
