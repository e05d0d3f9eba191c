"""Peak resident memory of ``evaluate_case`` on the synthetic CT case of ``bench_calibration.py``.

Run each measurement in a fresh process (``ru_maxrss`` only grows):

    python benchmarks/bench_evaluate_memory.py [--size 128] [--classes 4] [--raters 3] [--bins 50] [--slab-voxels N]
    python benchmarks/bench_evaluate_memory.py --shape 300 512 512     # a CT-sized case (78.6 M voxels)

``--slab-voxels 0`` evaluates the whole case as one slab (the memory of the unchunked path).
Prints the peak RSS after building the inputs, after the evaluation, and the difference.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from uqseg_cli.metrics.evaluation import SLAB_VOXELS, CaseInput, EvalOptions, evaluate_case


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--shape", type=int, nargs=3, default=None, help="D H W (default: --size cubed)")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--raters", type=int, default=3)
    ap.add_argument("--bins", type=int, default=50)
    ap.add_argument("--slab-voxels", type=int, default=SLAB_VOXELS)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    k, r = a.classes, a.raters
    shape = tuple(a.shape) if a.shape else (a.size,) * 3
    probs = np.empty((k, *shape), dtype=np.float32)
    raters = np.empty((r, *shape), dtype=np.uint8)
    for i in range(shape[0]):  # built slice by slice so that setup does not raise the peak above the inputs
        lg = rng.normal(size=(k, *shape[1:])).astype(np.float32) * 3
        e = np.exp(lg - lg.max(0))
        probs[:, i] = e / e.sum(0)
        truth = probs[:, i].argmax(0)
        for j in range(r):
            raters[j, i] = np.where(rng.random(shape[1:]) < 0.8, truth, rng.integers(0, k, shape[1:]))
    inputs_mb = (probs.nbytes + raters.nbytes) / 2**20
    before = _peak_mb()
    inp = CaseInput("bench", "deterministic", probs, raters, (1.0, 1.0, 1.0))
    names = ["background"] + [f"c{i}" for i in range(1, k)]
    slab = a.slab_voxels if a.slab_voxels > 0 else probs[0].size
    t = time.perf_counter()
    rows, bins = evaluate_case(inp, names, EvalOptions(n_bins=a.bins), slab_voxels=slab)
    dt = time.perf_counter() - t
    after = _peak_mb()
    n = int(np.prod(shape))
    print(f"{'x'.join(map(str, shape))} = {n} voxels, K={k}, R={r}, slab {slab} voxels: inputs {inputs_mb:.0f} MiB, "
          f"peak RSS before {before:.0f} MiB, after {after:.0f} MiB, evaluation adds {after - before:.0f} MiB "
          f"= {(after - before) * 2**20 / n:.0f} bytes/voxel; {dt:.1f} s; ace {rows[-1]['ace']:.12f}")


if __name__ == "__main__":
    main()
