"""Speed of uqseg's calibration and CRPS against the peer/naive implementations the CURVAS code uses.

Side by side, on one CT-sized case (default 128^3 voxels, K = 4 classes, R = 3 raters, 50 bins = the CURVAS
setting), each path computing the same numbers:

1. top-label ECE per rater: uqseg per-bin sums (one bin index shared by the raters, ``np.bincount``) vs
   torchmetrics' ``MulticlassCalibrationError`` called once per rater (what the challenge code does) vs a naive
   loop over bins with boolean masks (the 2024 challenge's first ECE);
2. the whole per-case evaluation (``uqseg_cli.metrics.evaluation.evaluate_case``: all Dice variants, all ECE variants
   per rater, ACE, Brier, NLL, CRPS) for scale;
3. curvas volume CRPS: uqseg's exact piecewise integration vs ``scipy.integrate.quad`` on the interpolated CDF
   (the challenge code), over 200 predicted volumes.

    python benchmarks/bench_calibration.py [--size 128] [--classes 4] [--raters 3] [--bins 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from uqseg_cli.metrics import calibration as cal
from uqseg_cli.metrics.crps import crps_curvas
from uqseg_cli.metrics.evaluation import CaseInput, EvalOptions, evaluate_case


def _timed(fn, repeat=3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--raters", type=int, default=3)
    ap.add_argument("--bins", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    s, k, r, nb = a.size, a.classes, a.raters, a.bins
    logits = rng.normal(size=(k, s, s, s)).astype(np.float32) * 3
    probs = np.exp(logits - logits.max(0))
    probs /= probs.sum(0)
    del logits
    truth = probs.argmax(0)
    raters = np.stack([np.where(rng.random((s, s, s)) < 0.8, truth, rng.integers(0, k, (s, s, s))) for _ in range(r)])
    n = s**3
    print(f"case: {s}^3 = {n} voxels, K={k}, R={r}, {nb} bins; torch threads {torch.get_num_threads()}")

    # 1. top-label ECE per rater
    def ours():
        conf, pred = cal.top_label(probs)
        conf, pred = conf.ravel(), pred.ravel()
        idx = cal.bin_index(conf, nb)
        return [cal.bin_sums(conf, pred == raters[i].ravel(), nb, index=idx).ece() for i in range(r)]

    from torchmetrics.classification import MulticlassCalibrationError

    flat = torch.from_numpy(probs.reshape(k, -1).T.copy())

    def peer():
        out = []
        for i in range(r):
            m = MulticlassCalibrationError(num_classes=k, n_bins=nb)
            out.append(float(m(flat, torch.from_numpy(raters[i].reshape(-1).astype(np.int64)))))
        return out

    def naive():
        conf_t, pred_t = torch.max(torch.from_numpy(probs), 0)
        edges = torch.linspace(0, 1, nb + 1)
        out = []
        for i in range(r):
            acc = pred_t.eq(torch.from_numpy(raters[i].astype(np.int64)))
            e = 0.0
            for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                in_bin = conf_t.ge(lo) & (conf_t.lt(hi) if hi < 1 else conf_t.le(hi))
                prop = in_bin.float().mean()
                if prop > 0:
                    e += abs(float(acc[in_bin].float().mean()) - float(conf_t[in_bin].mean())) * float(prop)
            out.append(e)
        return out

    t_ours, v_ours = _timed(ours)
    t_peer, v_peer = _timed(peer)
    t_naive, v_naive = _timed(naive, repeat=1)
    print("\n1. top-label ECE, all raters")
    print(f"   uqseg per-bin sums        {t_ours:8.3f} s   ECE {np.round(v_ours, 6).tolist()}")
    print(f"   torchmetrics per rater    {t_peer:8.3f} s   ECE {np.round(v_peer, 6).tolist()}   "
          f"ratio uqseg/torchmetrics {t_ours / t_peer:.2f}x")
    print(f"   naive loop over bins      {t_naive:8.3f} s   ECE {np.round(v_naive, 6).tolist()}   "
          f"ratio uqseg/naive {t_ours / t_naive:.2f}x")
    print(f"   max |uqseg - torchmetrics| = {np.max(np.abs(np.array(v_ours) - np.array(v_peer))):.2e}")

    # 2. whole evaluation of the case
    inp = CaseInput("bench", "deterministic", probs, raters.astype(np.uint8), (1.0, 1.0, 1.0))
    names = ["background"] + [f"c{i}" for i in range(1, k)]
    t_all, (rows, bins) = _timed(lambda: evaluate_case(inp, names, EvalOptions(n_bins=nb)), repeat=1)
    print(f"\n2. full evaluate_case (all metrics, {len(rows)} rows, {len(bins)} bin rows): {t_all:.2f} s "
          f"= {t_all / t_peer:.2f}x the torchmetrics top-label ECE alone")

    # 3. curvas CRPS
    from scipy.integrate import quad
    from scipy.interpolate import interp1d
    from scipy.stats import norm

    vols = np.array([1510.0, 1602.0, 1475.0])
    mu, sd = vols.mean(), vols.std()
    xs_pred = np.linspace(1300, 1800, 200)

    def crps_ours():
        return [crps_curvas(x, mu, sd) for x in xs_pred]

    def crps_quad():
        g = norm(loc=mu, scale=sd)
        xs = np.linspace(g.ppf(0.01), g.ppf(0.99), 100)
        cdf = interp1d(xs, g.cdf(xs), bounds_error=False, fill_value=(0, 1))
        out = []
        for x in xs_pred:
            out.append(quad(lambda y, x=x: (cdf(y) - 0.5 * (np.sign(y - x) + 1)) ** 2, mu - 3 * sd, mu + 3 * sd)[0])
        return out

    import warnings

    t_c, v_c = _timed(crps_ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_q, v_q = _timed(crps_quad, repeat=1)
    err = np.abs(np.array(v_c) - np.array(v_q))
    print(f"\n3. curvas CRPS, {len(xs_pred)} predictions: uqseg exact {t_c:.3f} s, challenge quad {t_q:.3f} s, "
          f"ratio {t_c / t_q:.2f}x; max |diff| {err.max():.2e} ml (quad's own error on the discontinuity)")


if __name__ == "__main__":
    main()
