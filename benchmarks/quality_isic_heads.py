"""Which regressor should sit on the critics? Every ``--critic-head`` on the same fitted critics of an ISIC run of
`benchmarks/quality_isic.py`, chosen without the held-out cases, then applied through ``uqseg score --model``.

For each seed of a critic run (``<work>/runs/<run>-s<seed>/quality.pt``, fitted with ``--cv K``) the saved fold
critics give the ``fit`` cases their out-of-fold critic features again (critic k on fold k; the folds of
``score``'s seed), cached in ``critic_oof.npy`` of the run. On those features:

1. **selection, fit cases only**: each head is cross-validated over the 600 fit cases (5 folds × 3 repeats);
2. **held out**: each head is refitted on all fit cases (``quality.critic_head.fit_critic_head``, the function
   ``score`` uses), written with the run's critics as ``runs/<run>-<head>-s<seed>/quality.pt`` and applied unchanged
   to ``test`` and PH2 by ``uqseg score --model``; its rows go to ``results/run-<run>-<head>-s<seed>.csv`` for
   ``quality_isic.py table``. The head the run was fitted with must come back from these features with the saved
   arrays bit for bit (checked first), so the held-out numbers are those ``score`` would give with
   ``--critic-head <head>``.

    python benchmarks/quality_isic_heads.py --work /tmp/isic --run critic --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import KFold

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_isic as qi  # noqa: E402  (the harness: its runner, summaries and Dice tables)

from uqseg_cli.io.store import StageFile  # noqa: E402
from uqseg_cli.metrics.regression import regression_summary  # noqa: E402
from uqseg_cli.quality.checkpoint import read_quality_checkpoint, save_quality_model  # noqa: E402
from uqseg_cli.quality.critic import CRITIC_FEATURES, load_critics, predict_critic_features  # noqa: E402
from uqseg_cli.quality.critic_head import CRITIC_HEADS, critic_head_of, fit_critic_head, predict_critic_head  # noqa: E402
from uqseg_cli.quality.crossfit import assign_folds, cross_fit  # noqa: E402
from uqseg_cli.quality.scoring import load_raw, method_matrix  # noqa: E402

METRICS = ("r2", "pearson", "spearman", "mae")


def fit_part(work: Path, run_dir: Path, seed: int):
    """The run's meta and saved objects; the fit cases' aggregated features ``(n, F)``, out-of-fold critic features
    ``(n, 4)`` and Dice ``(n,)``; the folds ``(n,)``."""
    obj = read_quality_checkpoint(run_dir / "quality.pt")
    meta = obj["meta"]
    ids = [str(c) for c in meta.train_cases]
    folds = assign_folds(len(ids), int(meta.critics), seed)
    cache = run_dir / "critic_oof.npy"
    if cache.exists():
        z = np.load(cache)
    else:
        critics = load_critics(meta, obj["state_dict"])
        with StageFile(work / "uncertainty_fit.h5") as sf:
            x = load_raw(sf, ids, meta)
        z = np.zeros((len(ids), len(CRITIC_FEATURES)))
        for f, c in enumerate(critics):
            z[folds == f] = predict_critic_features(c, x[folds == f], meta, 16, "cpu")
        np.save(cache, z)
    long = pd.read_csv(work / "features_fit.csv")
    long["case"] = long["case"].astype(str)
    agg = meta.features[: len(meta.features) - len(CRITIC_FEATURES)]
    xa = method_matrix(long, meta.method, agg, ids)
    y = qi.dice_of(work, "fit").rename(index=str).loc[ids].to_numpy(float)
    return obj, xa, z, y, folds


def out_of_fold(xa, z, y, folds, seed: int, head: str) -> np.ndarray:
    """The head cross-fitted on ``score``'s folds: the fit cases' ``fit-oof`` predictions of ``score``."""
    return cross_fit(folds, lambda tr, te, f: predict_critic_head(
        fit_critic_head(xa[tr], z[tr], y[tr], seed, head), xa[te], z[te]))


def select(xa, z, y, seed: int, heads) -> list[dict]:
    """Cross-validation of each head over the fit cases alone (5 folds, 3 repeats)."""
    rows = []
    for rep in range(3):
        folds = np.empty(len(y), dtype=int)
        for f, (_, te) in enumerate(KFold(5, shuffle=True, random_state=100 * seed + rep).split(xa)):
            folds[te] = f
        for head in heads:
            s = regression_summary(y, out_of_fold(xa, z, y, folds, seed, head))
            rows.append({"seed": seed, "repeat": rep, "head": head, **{k: s[k] for k in METRICS}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--run", default="critic", help="a critic run of quality_isic.py (its runs/<run>-s<seed>)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--heads", nargs="+", default=list(CRITIC_HEADS), choices=CRITIC_HEADS)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    qi.THREADS["n"] = args.threads
    torch.set_num_threads(args.threads)
    work, log = args.work, args.work / "commands.log"
    cv_rows = []
    for seed in args.seeds:
        src = work / "runs" / f"{args.run}-s{seed}"
        obj, xa, z, y, folds = fit_part(work, src, seed)
        own = critic_head_of(obj["arrays"])  # the run's own head must come back exactly from these features
        for name, st in fit_critic_head(xa, z, y, seed, own).items():
            for k, v in st.items():
                if not np.array_equal(v, obj["arrays"][name][k]):
                    raise SystemExit(f"{src}: the refitted {own} head differs from the saved one ({name}.{k})")
        cv_rows += select(xa, z, y, seed, args.heads)
        for head in args.heads:
            arrays = fit_critic_head(xa, z, y, seed, head)
            out = work / "runs" / f"{args.run}-{head}-s{seed}"
            out.mkdir(parents=True, exist_ok=True)
            save_quality_model(out / "quality.pt", obj["meta"], arrays=arrays, state_dict=obj["state_dict"])
            rows = []
            for part in ("test", "ph2"):
                res = out / f"{part}.csv"
                if not res.exists():
                    qi.sh(["score", "-i", work / f"uncertainty_{part}.h5", "--model", out / "quality.pt", "-o", res,
                           "--features", work / f"features_{part}.csv"], log)
                s = qi.summary_of(res)
                s["part"] = part
                rows.append(s.merge(qi.high_dice(res), on=["method", "measure", "framework"], how="left"))
            oof = out_of_fold(xa, z, y, folds, seed, head)
            rows.append(pd.DataFrame([{"method": obj["meta"].method, "measure": obj["meta"].measure,
                                       "framework": "critic", **regression_summary(y, oof), "part": "fit-oof"}]))
            df = pd.concat(rows, ignore_index=True)
            df["run"], df["seed"] = f"{args.run}-{head}", seed
            df.to_csv(work / "results" / f"run-{args.run}-{head}-s{seed}.csv", index=False)
            got = df[(df["framework"] == "critic")].set_index("part")
            print(f"seed {seed} {head:6s} " + " | ".join(
                f"{p} R² {got.loc[p, 'r2']:.3f} r {got.loc[p, 'pearson']:.3f}" for p in ("test", "ph2", "fit-oof")),
                flush=True)
    cv = pd.DataFrame(cv_rows)
    print("\nselection on the fit cases alone (5-fold CV × 3 repeats, mean ± sd over seeds and repeats):\n")
    print("| head | R² | Pearson | Spearman | MAE |\n|---|---|---|---|---|")
    g = cv.groupby("head")[list(METRICS)]
    for head, m in g.mean().iterrows():
        sd = g.std().loc[head]
        print(f"| {head} | " + " | ".join(f"{m[k]:.3f} ± {sd[k]:.3f}" for k in METRICS) + " |")


if __name__ == "__main__":
    main()
