"""Benchmark of `uqseg aggregate` / `uqseg score`: kernels vs naive/peer implementations, and PH2 end to end.

Part 1 (``--part kernels``): each fast kernel next to a naive or peer implementation on the same input, checked
equal, with the time ratio: patch-max by cumulative sums vs ``scipy.ndimage.uniform_filter`` and a Python loop;
the boundary band by dilation vs ``scipy.ndimage.distance_transform_cdt``; HD95 by the Euclidean distance transform
vs all-pairs ``cdist``; the exported random forest vs scikit-learn's ``predict``.

Part 2 (``--part ph2``): the real commands on ``../shared/data/ph2``: train the segmenter on part A, predict and
sample part B, compute uncertainty, aggregate (with the correlation report), and score every method × measure ×
framework with 5-fold out-of-fold predictions — the regressors next to the best single feature. Prints tables and
writes them under ``--work``.

    python benchmarks/ph2_quality.py --part kernels
    python benchmarks/ph2_quality.py --part ph2 --work /tmp/ph2q --train-cases 50 --epochs 8
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PH2 = (REPO / ".." / "shared" / "data" / "ph2").resolve()


def timeit(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def kernels() -> None:
    from scipy import ndimage
    from scipy.spatial.distance import cdist
    from sklearn.ensemble import RandomForestRegressor

    from uqseg_cli.metrics.surface import hd95, surface
    from uqseg_cli.quality.features import export_forest, predict_forest
    from uqseg_cli.quality.regions import boundary_band, patch_max_mean

    rng = np.random.default_rng(0)
    rows = []

    # patch-max on a 384x288 map (PH2 size), 32x32 windows
    u = rng.random((288, 384))
    p = 32
    t_fast, v_fast = timeit(lambda: patch_max_mean(u, p))

    def peer():
        f = ndimage.uniform_filter(u, size=p, mode="constant")
        lo, hi = p // 2, p - p // 2 - 1  # centred windows that lie fully inside
        return float(f[lo : u.shape[0] - hi, lo : u.shape[1] - hi].max())

    t_peer, v_peer = timeit(peer)
    small = u[:96, :96]
    t_loop, v_loop = timeit(
        lambda: max(small[i : i + p, j : j + p].mean() for i in range(96 - p + 1) for j in range(96 - p + 1)), 1
    )
    assert abs(v_fast - v_peer) < 1e-9 and abs(patch_max_mean(small, p) - v_loop) < 1e-12
    rows.append(("patch-max 288x384, 32^2 windows", t_fast, "scipy uniform_filter", t_peer))
    t_small, _ = timeit(lambda: patch_max_mean(small, p))
    rows.append(("patch-max 96x96 (vs Python loop)", t_small, "Python loop over windows", t_loop))

    # boundary band, width 3, on a PH2-sized lesion mask
    yy, xx = np.mgrid[:288, :384]
    fg = ((yy - 140) ** 2 / 80**2 + (xx - 200) ** 2 / 120**2) <= 1
    fg ^= rng.random(fg.shape) < 0.002
    t_fast, band = timeit(lambda: boundary_band(fg, 3))

    def band_peer():
        d_in = ndimage.distance_transform_cdt(fg, metric="chessboard")  # distance of fg voxels to background
        d_out = ndimage.distance_transform_cdt(~fg, metric="chessboard")
        return (fg & (d_in <= 3)) | (~fg & (d_out <= 3))

    # the peer treats the array edge as background; compare away from the edge only
    t_peer, band2 = timeit(band_peer)
    inner = (slice(4, -4), slice(4, -4))
    assert np.array_equal(band[inner], band2[inner])
    rows.append(("boundary band 288x384, width 3", t_fast, "scipy distance_transform_cdt x2", t_peer))

    # HD95 between two lesion masks
    ref = fg
    seg = ndimage.binary_dilation(np.roll(fg, 5, axis=1), iterations=2)
    t_fast, h = timeit(lambda: hd95(seg, ref, (0.5, 0.5)))

    def hd_brute():
        a = np.argwhere(surface(seg)) * 0.5
        b = np.argwhere(surface(ref)) * 0.5
        d = cdist(a, b)
        return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))

    t_peer, h2 = timeit(hd_brute, 1)
    assert abs(h - h2) < 1e-9
    rows.append(("HD95 288x384 lesion masks", t_fast, "all-pairs cdist of surface voxels", t_peer))

    # forest prediction from exported arrays vs scikit-learn
    x = rng.normal(size=(120, 30))
    y = rng.random(120)
    rf = RandomForestRegressor(n_estimators=200, min_samples_leaf=3, random_state=0).fit(x, y)
    st = export_forest(rf, np.zeros(30))
    xq = rng.normal(size=(150, 30))
    t_fast, a = timeit(lambda: predict_forest(st, xq))
    t_peer, b = timeit(lambda: rf.predict(xq))
    assert np.allclose(a, np.clip(b, 0, 1), atol=1e-12)
    rows.append(("forest predict, 200 trees, 150 cases", t_fast, "sklearn predict", t_peer))

    print(f"{'kernel':<40} {'uqseg s':>9}  {'peer':<36} {'peer s':>9} {'peer/uqseg':>10}")
    for name, tf, peer_name, tp in rows:
        print(f"{name:<40} {tf:>9.4f}  {peer_name:<36} {tp:>9.4f} {tp / tf:>10.1f}")


# ----------------------------------------------------------------------------------------------------------------
# PH2 end to end through the real commands


def uqseg(args: list[str], cwd: Path, log: list) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "uqseg_cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    log.append({"cmd": "uqseg " + " ".join(args), "seconds": round(dt, 1), "rc": r.returncode})
    print(f"[{dt:7.1f} s] uqseg {' '.join(args)}", flush=True)
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"command failed ({r.returncode}): uqseg {' '.join(args)}")
    return dt


def manifest(path: Path, ids: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "image", "mask"])
        for c in ids:
            w.writerow([c, str(PH2 / "images" / f"{c}.jpg"), str(PH2 / "masks" / f"{c}.png")])


def ph2(a: argparse.Namespace) -> None:
    import pandas as pd

    if not PH2.exists():
        raise SystemExit(f"{PH2}: PH2 data not present")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ids = sorted(r["case"] for r in csv.DictReader((PH2 / "cases.csv").open()))
    perm = np.random.default_rng(a.seed).permutation(len(ids))
    train_ids = sorted(ids[i] for i in perm[: a.train_cases])
    rest = sorted(ids[i] for i in perm[a.train_cases :])
    manifest(work / "train.csv", train_ids)
    manifest(work / "rest.csv", rest)
    log: list = []
    step = a.steps.split(",")
    if "train" in step:
        uqseg(["train", "-i", "train.csv", "-o", "seg.pt", "--model", a.seg_model, "--epochs", str(a.epochs),
               "--input-size", a.seg_size, "--device", "cpu", "--threads", str(a.threads), "--overwrite", "-q",
               *a.train_args.split()], work, log)
    if "predict" in step:
        uqseg(["predict", "-i", "rest.csv", "-m", "seg.pt", "--overwrite", "--device", "cpu"], work, log)
    if "sample" in step:
        uqseg(["sample", "--method", a.methods, "--overwrite", "--device", "cpu", *a.sample_args.split()], work, log)
        uqseg(["uncertainty", "--overwrite"], work, log)
    if "aggregate" in step:
        uqseg(["aggregate", "--overwrite", "--correlate", "correlations.csv"], work, log)
    if "score" in step:
        common = ["--cv", "5", "--overwrite", "--device", "cpu", "--seed", "0"]
        uqseg(["score", "--framework", "features", "--measure", "all", "-o", "scores_features.csv",
               "--save-model", "q_features.pt", *common], work, log)
        cnn = ["--backbone", a.backbone, "--input-size", a.input_size, "--epochs", str(a.q_epochs),
               "--patience", str(a.q_patience)]
        for m in a.methods.split(","):
            for meas in a.cnn_measures.split(","):
                uqseg(["score", "--method", m, "--framework", "seg-unc,img-seg-unc", "--measure", meas,
                       "-o", f"scores_cnn_{m}_{meas}.csv", "--save-model", f"q_cnn_{m}_{meas}.pt", *cnn, *common],
                      work, log)
    if log:
        (work / "commands.json").write_text(json.dumps(log, indent=2))

    # tables
    summ = [pd.read_csv(p) for p in sorted(work.glob("scores_*.summary.csv"))]
    if summ:
        s = pd.concat(summ, ignore_index=True).drop_duplicates(["method", "measure", "framework"], keep="last")
        s = s.sort_values(["method", "measure", "framework"])
        s.to_csv(work / "summary_all.csv", index=False)
        with pd.option_context("display.width", 200, "display.max_rows", 500):
            print(s[["method", "measure", "framework", "n", "r2", "pearson", "spearman", "mae", "aurc", "detail"]]
                  .round(3).to_string(index=False))
        base = s[s.framework == "baseline"].set_index(["method", "measure"])
        print("\nregressor vs best single feature (Pearson gain, R2 gain):")
        for r in s[s.framework != "baseline"].itertuples():
            if (r.method, r.measure) in base.index:
                b = base.loc[(r.method, r.measure)]
                print(f"  {r.method:>10} {r.measure:>20} {r.framework:>16}: pearson {r.pearson:+.3f} "
                      f"(baseline {b.pearson:+.3f}), R2 {r.r2:+.3f} (baseline {b.r2:+.3f})")
    corr = work / "correlations.csv"
    if corr.exists():
        c = pd.read_csv(corr)
        c = c[c.metric == "dice"].head(15)
        print("\nstrongest single features vs Dice:")
        print(c.round(3).to_string(index=False))
    feats, q = work / "features.csv", work / "scores_features.csv"
    if feats.exists() and q.exists():
        from uqseg_cli.metrics.regression import regression_summary
        from uqseg_cli.quality.crossfit import assign_folds, cross_fit
        from uqseg_cli.quality.features import fit_baseline, predict_baseline

        f = pd.read_csv(feats)
        truth = pd.read_csv(q).drop_duplicates("case").set_index("case")["true_dice"].dropna()
        print("\ncombined score alone (equal-weight z-scores of the foreground means; linear fit, 5-fold OOF):")
        for m in sorted(f.method.unique()):
            v = f[(f.method == m) & (f.measure == "combined")].set_index("case")["value"].reindex(truth.index)
            x, y = v.to_numpy()[:, None], truth.to_numpy()
            folds = assign_folds(len(y), 5, 0)
            p = cross_fit(folds, lambda tr, te, k, x=x, y=y: predict_baseline(fit_baseline(x[tr], y[tr]), x[te]))
            s_ = regression_summary(y, p)
            print(f"  {m:>10}: n {s_['n']}, R2 {s_['r2']:.3f}, Pearson {s_['pearson']:.3f}, MAE {s_['mae']:.3f}")
    if q.exists():
        d = pd.read_csv(q)
        t = d.drop_duplicates("case")["true_dice"]
        print(f"\nsegmenter on the quality cases: Dice mean {t.mean():.3f}, std {t.std():.3f}, min {t.min():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["kernels", "ph2", "all"], default="kernels")
    ap.add_argument("--work", default="/tmp/uqseg_ph2_quality")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-cases", type=int, default=50)
    ap.add_argument("--seg-model", default="fpn-resnet18")
    ap.add_argument("--seg-size", default="192x256", help="segmenter grid HxW")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-args", default="")
    ap.add_argument("--methods", default="tta,mcdropout")
    ap.add_argument("--sample-args", default="")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--input-size", default="64")
    ap.add_argument("--q-epochs", type=int, default=20)
    ap.add_argument("--q-patience", type=int, default=5)
    ap.add_argument("--cnn-measures", default="combined,entropy")
    ap.add_argument("--steps", default="train,predict,sample,aggregate,score")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), machine: 2 CPU cores shared with other jobs")
    if a.part in ("kernels", "all"):
        kernels()
    if a.part in ("ph2", "all"):
        ph2(a)


if __name__ == "__main__":
    main()
