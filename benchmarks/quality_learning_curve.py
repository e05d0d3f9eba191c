"""How many labelled cases does the quality regressor need? Held-out R² against the number of fitted cases.

Reuses the ISIC 2017 base run of ``benchmarks/quality_isic.py`` (``--work DIR`` holding ``features_fit.csv``,
``features_test.csv``, ``dice_fit.csv``, ``dice_test.csv``: 1,600 cases the segmenter never saw). A fixed random
``--holdout`` of them is never fitted on; from the others, random subsets of each size are drawn ``--repeats``
times, and every feature regressor (uqseg's own `linear`, `forest`, `boost`, the exact models `score` fits) and the
best single feature (chosen and fitted on the same subset) are fitted on the subset and scored on the holdout.

    python benchmarks/quality_learning_curve.py --work /tmp/isic --method tta --sizes 50 100 200 400 600 1000

Features: every aggregated feature of the method except the combined z-score (its statistics were computed per
part, so it is not comparable across the pooled parts). Prints a Markdown table (mean ± sd over the repeats).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from uqseg_cli.metrics.regression import pearson, r2_score
from uqseg_cli.quality.features import fit_baseline, fit_feature_model, predict_baseline, predict_feature_model


def load(work: Path, method: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Feature matrix ``(cases, features)``, Dice ``(cases,)`` and the feature names, fit and test parts pooled."""
    long = pd.concat([pd.read_csv(work / f"features_{p}.csv") for p in ("fit", "test")])
    long = long[(long["method"] == method) & (long["measure"] != "combined")]
    wide = long.pivot_table(index="case", columns=["measure", "region"], values="value", aggfunc="first")
    dice = pd.concat([pd.read_csv(work / f"dice_{p}.csv") for p in ("fit", "test")]).set_index("case")["dice"]
    cases = sorted(set(wide.index) & set(dice.index))
    x = wide.loc[cases].to_numpy(dtype=np.float64)
    names = [f"{m}/{r}" for m, r in wide.columns]
    return x, dice.loc[cases].to_numpy(dtype=np.float64), names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--method", default="tta")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400, 600, 1000])
    ap.add_argument("--holdout", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default="linear,forest,boost")
    args = ap.parse_args()
    x, y, names = load(args.work, args.method)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    test, pool = order[: args.holdout], order[args.holdout:]
    print(f"{len(y)} cases, {len(names)} features ({args.method}); holdout {len(test)} (Dice {y[test].mean():.3f} "
          f"± {y[test].std(ddof=1):.3f}); pool {len(pool)}")
    kinds = args.models.split(",")
    rows = []
    for n in [s for s in args.sizes if s <= len(pool)]:
        for rep in range(args.repeats):
            sub = np.random.default_rng(1000 * n + rep).choice(pool, n, replace=False)
            for kind in [*kinds, "baseline"]:
                if kind == "baseline":
                    state = fit_baseline(x[sub], y[sub])
                    pred = predict_baseline(state, x[test])
                else:
                    state = fit_feature_model(kind, x[sub], y[sub], seed=rep)
                    pred = predict_feature_model(kind, state, x[test])
                rows.append({"n": n, "rep": rep, "model": kind, "r2": r2_score(y[test], pred),
                             "pearson": pearson(y[test], pred), "mae": float(np.mean(np.abs(pred - y[test])))})
        print(f"  {n} cases done", flush=True)
    df = pd.DataFrame(rows)
    g = df.groupby(["n", "model"])
    t = g.agg(r2=("r2", "mean"), r2_sd=("r2", "std"), pearson=("pearson", "mean"), mae=("mae", "mean")).reset_index()
    print("\n| fitted cases | " + " | ".join(f"{k} R² / r" for k in [*kinds, "baseline"]) + " |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for n, part in t.groupby("n"):
        cells = []
        for k in [*kinds, "baseline"]:
            r = part[part["model"] == k].iloc[0]
            cells.append(f"{r.r2:.3f} ± {r.r2_sd:.3f} / {r.pearson:.3f}")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
