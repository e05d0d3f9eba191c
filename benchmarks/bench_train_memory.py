"""Peak RSS of `uqseg train` (one epoch, fresh process, the child's VmHWM) on N ISIC 2017 cases.

    python benchmarks/bench_train_memory.py --cases 100 500 2000 [--arch fpn-resnet18] [--repo /path/to/other/checkout]

``--repo`` runs another checkout's code (e.g. the main branch, before streaming) for the side-by-side numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pipeline as bp  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, nargs="+", default=[100, 2000])
    ap.add_argument("--arch", default="fpn-resnet18")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repo", type=Path, default=bp.REPO)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-train-memory"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = str(args.repo)
    bp.REPO = args.repo
    for n in args.cases:
        man = args.work / f"cases{n}.csv"
        bp.write_manifest(n, man)
        r = bp.uqseg(["train", "-i", str(man), "-m", args.arch, "--epochs", "1", "--val-fraction", "0",
                      "--threads", str(args.threads), "-o", str(args.work / f"seg{n}.pt"), "-q", "--overwrite"],
                     args.threads)
        print(f"{args.repo.name}: train {args.arch} 1 epoch on {n} cases: {r['wall']:.1f} s, peak RSS "
              f"{r['rss_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
