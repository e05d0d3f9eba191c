"""Does a regression CNN's prediction add to the aggregated features? A stacking check on the ISIC runs of
`benchmarks/quality_isic.py` (docs/quality.md, ablation).

Boosted trees are fitted on the ``fit`` cases' aggregated features (tta/combined) with and without the CNN's
out-of-fold prediction as one more column (from a run with ``--cv K``), then applied to ``test`` and PH2 with the
CNN's prediction for those cases; the plain mean of the CNN and the features-only boost is shown beside.

    python benchmarks/quality_isic_stack.py --work /tmp/isic --run cnn-fold-s0 --framework seg-unc
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from uqseg_cli.metrics.regression import regression_summary
from uqseg_cli.quality.features import fit_feature_model, predict_feature_model
from uqseg_cli.quality.scoring import COMBINED, feature_names, method_matrix

BASE_MEASURES = ("combined", "volume", "agreement", "shape")  # rows of the table that are not uncertainty measures


def load(work: Path, run: str, framework: str, part: str, scores: str):
    """Features ``(n, F)``, the CNN's prediction ``(n,)`` and the true Dice ``(n,)`` of one part's cases."""
    long = pd.read_csv(work / f"features_{part}.csv")
    long["case"] = long["case"].astype(str)
    sc = pd.read_csv(work / "runs" / run / f"{scores}.csv")
    sc = sc[sc["framework"] == framework].set_index("case")
    cases = [str(c) for c in sc.index]
    tta = long[long["method"] == "tta"]
    measures = sorted(m for m in tta["measure"].unique() if m not in BASE_MEASURES)
    names = feature_names(COMBINED, measures, False, set((long["measure"] + "/" + long["region"]).unique()))
    return method_matrix(long, "tta", names, cases), sc["predicted_dice"].to_numpy(), sc["true_dice"].to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--run", default="cnn-fold-s0", help="a run directory under <work>/runs fitted with --cv K")
    ap.add_argument("--framework", default="seg-unc")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    xf, cf, yf = load(args.work, args.run, args.framework, "fit", "fit")
    print("| part | boost seed | CNN R² / r | features boost | boost on features + CNN | mean of CNN and boost |")
    print("|---|---|---|---|---|---|")
    for part in ("test", "ph2"):
        xt, ct, yt = load(args.work, args.run, args.framework, part, part)

        def fmt(p, y=yt):
            s = regression_summary(y, p)
            return f"{s['r2']:.3f} / {s['pearson']:.3f}"

        for seed in args.seeds:
            pb = predict_feature_model("boost", fit_feature_model("boost", xf, yf, seed), xt)
            st = fit_feature_model("boost", np.c_[xf, cf], yf, seed)
            ps = predict_feature_model("boost", st, np.c_[xt, ct])
            print(f"| {part} | {seed} | {fmt(ct)} | {fmt(pb)} | {fmt(ps)} | {fmt(0.5 * (pb + ct))} |")


if __name__ == "__main__":
    main()
