"""Where does a held-out ISIC regressor lose its R²? The error analysis of one run of `benchmarks/quality_isic.py`.

For ``<work>/runs/<run>/test.csv`` (the 1,000 held-out cases, predicted by ``uqseg score --model``): the share of
the squared error carried by the k worst cases and the R² without them, the worst cases themselves, and, for
segmentations that cover much of the photo (``shape/area_fraction`` of ``aggregate``), how often they fail in the
fit part (what the regressor could learn from) and in the test part, with the regressor's mean prediction.

    python benchmarks/quality_isic_errors.py --work /tmp/isic --run critic-e48-blend-s0 --framework critic
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from uqseg_cli.metrics.regression import regression_summary


def read_part(work: Path, run: str, part: str, framework: str, method: str) -> pd.DataFrame:
    """A part's honest predictions (fit: out of fold) joined with the method's shape features, one row a case."""
    d = pd.read_csv(work / "runs" / run / f"{part}.csv")
    d = d[d.framework == framework]
    if part == "fit":
        d = d[d.split == "oof"]
    f = pd.read_csv(work / f"features_{part}.csv")
    f = f[(f.method == method) & (f.measure == "shape")].pivot(index="case", columns="region", values="value")
    return d.set_index("case").join(f).dropna(subset=["true_dice", "predicted_dice"])


def error_shares(true: np.ndarray, pred: np.ndarray, ks=(10, 20, 50, 100)) -> pd.DataFrame:
    """Per k: the share of the sum of squared errors in the k worst cases, and the R² of the others."""
    e = (true - pred) ** 2
    worst = np.sort(e)[::-1]
    sst = ((true - true.mean()) ** 2).sum()
    return pd.DataFrame([{"k": k, "share_of_sse": worst[:k].sum() / e.sum(),
                          "r2_without": 1 - (e.sum() - worst[:k].sum()) / sst} for k in ks])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--run", required=True, help="a run directory under <work>/runs, e.g. critic-e48-blend-s0")
    ap.add_argument("--framework", default="critic")
    ap.add_argument("--method", default="tta")
    ap.add_argument("--fit-run", default=None, help="the run whose fit.csv holds the out-of-fold rows (default: --run)")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    test = read_part(a.work, a.run, "test", a.framework, a.method)
    t, p = test.true_dice.to_numpy(), test.predicted_dice.to_numpy()
    print(f"{a.run}: {len(test)} held-out cases, R² {regression_summary(t, p)['r2']:.3f}")
    print(error_shares(t, p).round(3).to_string(index=False))
    worst = test.assign(sq_error=(t - p) ** 2).sort_values("sq_error", ascending=False).head(a.top)
    print(worst[["true_dice", "predicted_dice", "area_fraction", "border_fraction"]].round(3).to_string())
    parts = {"fit": read_part(a.work, a.fit_run or a.run, "fit", a.framework, a.method), "test": test}
    rows = []
    for name, d in parts.items():
        for lo in (0.4, 0.5, 0.6):
            s = d[d.area_fraction > lo]
            rows.append({"part": name, "area_fraction >": lo, "n": len(s), "dice < 0.5": int((s.true_dice < 0.5).sum()),
                         "true mean": s.true_dice.mean(), "predicted mean": s.predicted_dice.mean()})
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
