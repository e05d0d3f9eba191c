"""Quality prediction at paper scale on ISIC 2017, held out, through the real `uqseg` commands.

The recipe (issue 11): a segmenter (fpn-resnet18, 3 members, 6 epochs) is trained on 400 ISIC 2017 cases; the
other cases go through predict → sample (mcdropout, tta, ensemble; T = 8) → uncertainty → aggregate in two disjoint
parts: ``fit`` (600 cases, the only ones the quality regressors are fitted on) and ``test`` (the remaining 1,000,
never seen by the segmenter nor by the regressors). The fitted quality model is applied *unchanged*
(`score --model`) to ``test`` and to PH2 (another acquisition; no refit). Every framework is reported next to the
best single feature (chosen and fitted on ``fit``, applied to ``test``) over several regressor seeds.

    python benchmarks/quality_isic.py --work /tmp/isic base          # split, train, predict/sample/... (once)
    python benchmarks/quality_isic.py --work /tmp/isic score --seeds 0 1 2
    python benchmarks/quality_isic.py --work /tmp/isic table         # the tables of docs/quality.md

Each step is skipped when its output exists (the stages also resume), so the base run is computed once and every
scoring experiment reuses it. Tables go to ``<work>/results/*.csv`` and are printed as Markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
ISIC = DATA / "isic2017"
PH2 = DATA / "ph2"
UQSEG = [sys.executable, "-m", "uqseg_cli"]
THREADS = {"n": 1}  # torch threads of every stage (also for the stages without --threads), set from --threads


def sh(args: list, log: Path) -> float:
    """Run one uqseg command, appending it and its output to ``log``; returns seconds."""
    t = time.perf_counter()
    cmd = [str(a) for a in args]
    with log.open("a") as fh:
        fh.write("$ uqseg " + " ".join(cmd) + "\n")
        fh.flush()
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS["n"]), "MKL_NUM_THREADS": str(THREADS["n"])}
        proc = subprocess.run([*UQSEG, *cmd], stdout=fh, stderr=subprocess.STDOUT, env=env)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): uqseg {' '.join(cmd)} (see {log})")
    print(f"  {dt:7.1f} s  uqseg {' '.join(cmd)}", flush=True)
    return dt


def write_manifest(path: Path, ids: list[str], images: Path, masks: Path, ext: str) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "image", "mask"])
        for c in sorted(ids):
            w.writerow([c, images / f"{c}{ext}", masks / f"{c}.png"])


def split(work: Path, n_seg: int, n_fit: int, seed: int) -> None:
    ids = sorted(r["case"] for r in csv.DictReader((ISIC / "cases.csv").open()))
    random.Random(seed).shuffle(ids)
    parts = {"seg": ids[:n_seg], "fit": ids[n_seg : n_seg + n_fit], "test": ids[n_seg + n_fit :]}
    for name, sel in parts.items():
        if not (work / f"{name}.csv").exists():
            write_manifest(work / f"{name}.csv", sel, ISIC / "images", ISIC / "masks", ".jpg")
    ph2 = sorted(p.stem for p in (PH2 / "images").glob("*.jpg"))
    if not (work / "ph2.csv").exists():
        write_manifest(work / "ph2.csv", ph2, PH2 / "images", PH2 / "masks", ".jpg")


def base(args) -> None:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    split(work, args.seg_cases, args.fit_cases, args.split_seed)
    seg = work / "seg.pt"
    # one run per ensemble member (seed k -> seg.member<k>.pt, found by `sample -m seg.pt`): each run is short,
    # resumable at member granularity, and the members can run as separate jobs
    for k in range(args.members):
        out = seg if k == 0 else work / f"seg.member{k}.pt"
        if not out.exists():
            sh(["train", "-i", work / "seg.csv", "-m", args.arch, "--epochs", args.epochs, "--seed", k,
                "--threads", args.threads, "-o", out], log)
    for part in ("fit", "test", "ph2"):
        pre, smp, unc = (work / f"{stage}_{part}.h5" for stage in ("predict", "samples", "uncertainty"))
        fea = work / f"features_{part}.csv"
        if not pre.exists():
            sh(["predict", "-i", work / f"{part}.csv", "-m", seg, "-o", pre, "--threads", args.threads], log)
        if not smp.exists():
            sh(["sample", "-i", pre, "-m", seg, "--method", "mcdropout,tta,ensemble", "-T", args.T, "-o", smp], log)
        if not unc.exists():
            sh(["uncertainty", "-i", smp, "-o", unc], log)
        if not fea.exists():
            sh(["aggregate", "-i", unc, "-o", fea], log)


# ----------------------------------------------------------------------------------------------------------------
# scoring experiments


def summary_of(path: Path) -> pd.DataFrame:
    return pd.read_csv(path.with_name(path.stem + ".summary.csv"))


def score_run(args, name: str, extra: list, seed: int) -> pd.DataFrame:
    """Fit on ``fit`` with ``extra`` score options, apply unchanged to ``test`` and ``ph2``; summary rows."""
    work = args.work
    log = work / "commands.log"
    out = work / "runs" / f"{name}-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    model = out / "quality.pt"
    rows = []
    if "@noagree" in extra:  # the same features without the agreement and shape ones (ablation)
        src = pd.read_csv(work / "features_fit.csv")
        dst = work / "features_fit_noagree.csv"
        src[~src["measure"].isin(["agreement", "shape"])].to_csv(dst, index=False)
        extra = [str(dst) if e == "@noagree" else e for e in extra]
    # aggregate's features.csv (the default regions, as score computes them itself) spares re-reading every map
    table = [] if "--features" in extra else ["--features", work / "features_fit.csv"]
    if not (out / "fit.csv").exists():
        sh(["score", "-i", work / "uncertainty_fit.h5", "-o", out / "fit.csv", "--save-model", model,
            "--seed", seed, *table, *extra], log)
    # one model per configuration: quality.pt, or quality.<method>.<measure>.<framework>.pt for several
    for part in ("test", "ph2"):
        for m in sorted(out.glob("quality*.pt")):
            res = out / f"{part}{m.stem[len('quality'):]}.csv"
            if not res.exists():
                sh(["score", "-i", work / f"uncertainty_{part}.h5", "--model", m, "-o", res,
                    "--features", work / f"features_{part}.csv"], log)
            s = summary_of(res)
            s["part"] = part
            s = s.merge(high_dice(res), on=["method", "measure", "framework"], how="left")
            rows.append(s)
    s = summary_of(out / "fit.csv")
    s["part"] = "fit-oof"
    rows.append(s)
    df = pd.concat(rows, ignore_index=True)
    df["run"] = name
    df["seed"] = seed
    return df


def high_dice(scores_csv: Path, threshold: float = 0.7) -> pd.DataFrame:
    """Spearman and MAE on the held-out cases whose true Dice is above ``threshold`` (do we rank the cases that
    look fine?)."""
    from scipy.stats import spearmanr

    df = pd.read_csv(scores_csv)
    df = df[df["split"].isin(["test", "oof"]) & (df["true_dice"] > threshold)]
    rows = []
    for (m, meas, fw), g in df.groupby(["method", "measure", "framework"]):
        rho = spearmanr(g["true_dice"], g["predicted_dice"]).statistic if len(g) > 2 else np.nan
        rows.append({"method": m, "measure": meas, "framework": fw, "n_hi": len(g), "spearman_hi": rho,
                     "mae_hi": float(np.mean(np.abs(g["true_dice"] - g["predicted_dice"])))})
    return pd.DataFrame(rows, columns=["method", "measure", "framework", "n_hi", "spearman_hi", "mae_hi"])


def baseline_heldout(work: Path, method: str, measure: str) -> dict:
    """The best single feature chosen and fitted on ``fit``, applied to ``test`` and ``ph2``."""
    from uqseg_cli.metrics.regression import regression_summary
    from uqseg_cli.quality.features import fit_baseline, predict_baseline

    def table(part):
        f = pd.read_csv(work / f"features_{part}.csv")
        f = f[f["method"] == method]
        wide = f.pivot_table(index="case", columns=["measure", "region"], values="value")
        wide.columns = [f"{a}/{b}" for a, b in wide.columns]
        return wide

    fit, out = table("fit"), {}
    y_fit = dice_of(work, "fit").reindex(fit.index).to_numpy()
    cols = [c for c in fit.columns if not c.startswith("combined/")]
    st = fit_baseline(fit[cols].to_numpy(), y_fit)
    feat = cols[int(st["feature"][0])]
    for part in ("test", "ph2"):
        t = table(part)
        y = dice_of(work, part).reindex(t.index).to_numpy()
        pred = predict_baseline(st, t.reindex(columns=cols).to_numpy())
        out[part] = {**regression_summary(y, pred, 0.7), "feature": feat}
    return out


def dice_of(work: Path, part: str) -> pd.Series:
    """True Dice per case of one part (from predict.h5's segmentation and reference)."""
    cache = work / f"dice_{part}.csv"
    if cache.exists():
        return pd.read_csv(cache, index_col="case")["dice"]
    import h5py

    from uqseg_cli.metrics.overlap import dice_per_class

    rows = {}
    with h5py.File(work / f"predict_{part}.h5", "r") as fh:
        for cid, g in fh["cases"].items():
            seg, ref = g["segmentation"][()], g["reference"][()]
            rows[cid] = float(dice_per_class(seg, ref, 2)[1:].mean())
    s = pd.Series(rows, name="dice").rename_axis("case").sort_index()
    s.to_frame().to_csv(cache)
    return s


def fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.3f}"


def table(args) -> None:
    res = args.work / "results"
    df = pd.concat([pd.read_csv(p) for p in sorted(res.glob("run-*.csv"))], ignore_index=True)
    cols = [c for c in ["r2", "pearson", "spearman", "mae", "aurc", "spearman_hi", "mae_hi"] if c in df.columns]
    g = df.groupby(["run", "part", "method", "measure", "framework"])[cols]
    agg = g.mean().join(g.std().add_suffix("_sd")).join(g.size().rename("seeds")).reset_index()
    agg.to_csv(res / "summary.csv", index=False)
    for part in ("test", "ph2", "fit-oof"):
        sub = agg[agg["part"] == part]
        print(f"\n### {part}\n")
        print("| run | method/measure | framework | R² | Pearson | Spearman | MAE | AURC | Spearman / MAE "
              "(Dice > 0.7) | seeds |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for _, r in sub.sort_values("r2", ascending=False).iterrows():
            hi = f"{fmt(r.get('spearman_hi', np.nan))} / {fmt(r.get('mae_hi', np.nan))}"
            print(f"| {r['run']} | {r['method']}/{r['measure']} | {r['framework']} | {fmt(r['r2'])} ± "
                  f"{fmt(r['r2_sd'])} | {fmt(r['pearson'])} | {fmt(r['spearman'])} | {fmt(r['mae'])} | "
                  f"{fmt(r['aurc'])} | {hi} | {int(r['seeds'])} |")
    for part in ("fit", "test", "ph2"):
        d = dice_of(args.work, part)
        print(f"Dice {part}: n {len(d)}, mean {d.mean():.3f}, sd {d.std():.3f}, median {d.median():.3f}, "
              f"< 0.7: {np.mean(d < 0.7):.0%}")


def score(args) -> None:
    res = args.work / "results"
    res.mkdir(exist_ok=True)
    runs = json.loads(args.runs) if args.runs else {"default": []}
    for name, extra in runs.items():
        for seed in args.seeds:
            t = time.perf_counter()
            df = score_run(args, name, list(extra), seed)
            df["seconds"] = time.perf_counter() - t
            df.to_csv(res / f"run-{name}-s{seed}.csv", index=False)
    for m in ("tta", "mcdropout", "ensemble"):
        b = baseline_heldout(args.work, m, "combined")
        print(m, json.dumps(b, default=float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["base", "score", "table"])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seg-cases", type=int, default=400)
    ap.add_argument("--fit-cases", type=int, default=600)
    ap.add_argument("--split-seed", type=int, default=2017)
    ap.add_argument("--arch", default="fpn-resnet18")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("-T", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", help='JSON {"name": [extra score options]} (default: {"default": []})')
    args = ap.parse_args()
    THREADS["n"] = args.threads
    {"base": base, "score": score, "table": table}[args.step](args)


if __name__ == "__main__":
    main()
