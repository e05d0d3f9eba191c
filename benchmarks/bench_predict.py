"""predict's per-case cost next to its bare forward loop, in one process (issue 15).

    python benchmarks/bench_predict.py --manifest cases.csv --checkpoint seg.pt [--raters DIR] [--cases 100]

Runs ``stages.predict.run`` on 2 cases first (imports, first model build), then on the manifest, then again on the
finished output (start-up only: checkpoint, discovery, no case); the per-case cost is the difference of the last
two. The bare loop (same model, one random image of the model's input size per forward, as predict runs it) is
timed before and after the stage and averaged, because a busy neighbour on a shared machine moves it by 10-30 %.
Prints wall, CPU (process) and the **main thread's CPU** per case: with write-behind the gzip writes and the
journal run in a writer thread, so the main thread's CPU is the stage's critical path when a core is free for the
writer (``--threads 1``); on a machine with no free core the wall follows the process CPU instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from uqseg_cli.models.checkpoint import load_checkpoint
from uqseg_cli.stages.base import Report
from uqseg_cli.stages.predict import PredictOptions, run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--raters", type=Path, default=None)
    ap.add_argument("--cases", type=int, default=100, help="first N rows of the manifest")
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-predict-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lines = a.manifest.read_text().splitlines()
    (work / "cases.csv").write_text("\n".join(lines[: a.cases + 1]) + "\n")
    (work / "cases2.csv").write_text("\n".join(lines[:3]) + "\n")
    n = len(lines[1 : a.cases + 1])
    opts = dict(checkpoint=a.checkpoint, raters=[a.raters] if a.raters else [], threads=1)

    def timed(manifest: Path, out: Path) -> tuple[float, float, float]:
        w, c, m = time.perf_counter(), time.process_time(), time.thread_time()
        run(PredictOptions(input=manifest, output=out, **opts), Report(quiet=True))
        return time.perf_counter() - w, time.process_time() - c, time.thread_time() - m

    model, meta = load_checkpoint(a.checkpoint)
    model.eval()
    h, w = meta.preprocessing.input_size
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(1, meta.preprocessing.channels, h, w, generator=g) for _ in range(16)]

    def bare() -> tuple[float, float]:
        with torch.no_grad():
            model(xs[0])
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                model(xs[i % len(xs)])
            return time.perf_counter() - w0, time.process_time() - c0

    timed(work / "cases2.csv", work / "warm.h5")
    b1 = bare()
    full = timed(work / "cases.csv", work / "predict.h5")
    again = timed(work / "cases.csv", work / "predict.h5")
    b2 = bare()
    res = {
        "cases": n,
        "wall_ms": 1000 * (full[0] - again[0]) / n,
        "cpu_ms": 1000 * (full[1] - again[1]) / n,
        "main_thread_cpu_ms": 1000 * (full[2] - again[2]) / n,
        "bare_wall_ms": 1000 * (b1[0] + b2[0]) / 2 / n,
        "bare_cpu_ms": 1000 * (b1[1] + b2[1]) / 2 / n,
        "startup_cpu_s": again[1],
    }
    res["ratio_wall"] = res["wall_ms"] / res["bare_wall_ms"]
    res["ratio_cpu"] = res["cpu_ms"] / res["bare_cpu_ms"]
    res["ratio_main_thread"] = res["main_thread_cpu_ms"] / res["bare_cpu_ms"]
    print(json.dumps({k: round(v, 3) for k, v in res.items()}))


if __name__ == "__main__":
    main()
