"""MC dropout, T samples on fpn-resnet50 at 256x256 (CPU): encoder caching vs T full passes, in one run.

Prints seconds and the ratio cached / full for dropout before the head (default) and in the whole decoder.
Usage: python benchmarks/bench_mcdropout.py [--T 20] [--size 256] [--arch fpn-resnet50] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.mc_dropout import sample_mc_dropout
from uqseg_cli.models import create_model
from uqseg_cli.rng import case_generator


class _Chunk:
    def __init__(self, x, size):
        self.x, self.index = x, (slice(0, size), slice(0, size))


def _restore(logits, chunk):
    return torch.log_softmax(logits[:, 0], dim=1)


def run(model, x, T, size, cache, max_batch):
    acc = SampleAccumulator(2, (size, size), T, (1.0, 1.0))
    t0 = time.perf_counter()
    info = sample_mc_dropout(model, [_Chunk(x, size)], _restore, acc, generator=case_generator(0, "bench", "mcdropout"),
                             cache_encoder=cache, max_batch=max_batch)
    dt = time.perf_counter() - t0
    return dt, info.mode, acc.result()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--arch", default="fpn-resnet50")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = torch.randn(1, 3, a.size, a.size)
    print(f"# {a.arch} {a.size}x{a.size}, T={a.T}, torch {torch.__version__}, {a.threads} CPU threads")
    print(f"{'dropout_at':<10} {'cached (s)':>11} {'full x T (s)':>13} {'full batched (s)':>17} {'ratio':>7}")
    for where in ("head", "decoder"):
        torch.manual_seed(0)
        model = create_model(a.arch, in_channels=3, num_classes=2, dropout=0.2, dropout_at=where).eval()
        run(model, x, 2, a.size, True, None)  # warm-up
        best = {}
        for _ in range(a.repeats):
            for key, cache, mb in (("cached", True, None), ("full", False, 1), ("fullb", False, None)):
                dt, _, res = run(model, x, a.T, a.size, cache, mb)
                best[key] = min(best.get(key, 1e9), dt)
                best[key + "_res"] = res
        diff = abs(best["cached_res"].sum_p - best["full_res"].sum_p).max()
        print(f"{where:<10} {best['cached']:>11.2f} {best['full']:>13.2f} {best['fullb']:>17.2f} "
              f"{best['cached'] / best['full']:>7.3f}   (max |Σp cached - Σp full| = {diff:.1e})")


if __name__ == "__main__":
    main()
