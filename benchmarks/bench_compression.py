"""Chunk compression of the stage files, measured: gzip levels, lzf, none (all with the byte shuffle, and gzip 4
without it), and float16 vs float32 for the float arrays — write time, read time, size.

Reads the arrays of real stage files (`predict.h5`, `samples.h5`, `uncertainty.h5` as `bench_pipeline.py` writes
them; default: its ISIC work folder) and rewrites them with each filter into a temporary file, through the same
chunking as `uqseg_cli.io.store.write_array`.

    python benchmarks/bench_compression.py --dir /tmp/bench-pipeline/isic100 [--cases 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from uqseg_cli.io.store import _chunks  # noqa: E402

FILTERS = {
    "none": {},
    "lzf+shuffle": {"compression": "lzf", "shuffle": True},
    "gzip1+shuffle": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "gzip4+shuffle": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "gzip4": {"compression": "gzip", "compression_opts": 4},
    "gzip9+shuffle": {"compression": "gzip", "compression_opts": 9, "shuffle": True},
}


def collect(path: Path, n: int) -> list[tuple[str, np.ndarray]]:
    out = []
    with h5py.File(path, "r") as f:
        for cid in sorted(f["cases"])[:n]:

            def visit(name, obj, cid=cid):
                if isinstance(obj, h5py.Dataset) and obj.size >= 64:
                    out.append((f"{cid}/{name}", obj[()]))

            f[f"cases/{cid}"].visititems(visit)
    return out


def run(arrays: list[tuple[str, np.ndarray]], kw: dict, cast16: bool) -> tuple[float, float, int]:
    fd, tmp = tempfile.mkstemp(suffix=".h5")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        with h5py.File(tmp, "w") as f:
            for name, a in arrays:
                if cast16 and a.dtype == np.float32:
                    a = a.astype(np.float16)
                f.create_dataset(name, data=a, chunks=_chunks(a.shape, a.dtype.itemsize), **kw)
        tw = time.perf_counter() - t0
        size = os.path.getsize(tmp)
        t0 = time.perf_counter()
        with h5py.File(tmp, "r") as f:
            for name, _ in arrays:
                f[name][()]
        tr = time.perf_counter() - t0
    finally:
        os.unlink(tmp)
    return tw, tr, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bench-pipeline/isic100"))
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    files = {
        "predict.h5": args.dir / "predict.h5",
        "samples.h5 (tta)": args.dir / "samples_tta.h5",
        "uncertainty.h5 (tta)": args.dir / "unc_tta.h5",
    }
    print(f"{args.cases} cases per file; best of {args.repeats}; ms per case; size in KB per case")
    print("| file | filter | float32 arrays as | write ms/case | read ms/case | KB/case |")
    print("|---|---|---|---|---|---|")
    for label, path in files.items():
        arrays = collect(path, args.cases)
        raw = sum(a.nbytes for _, a in arrays) / args.cases / 1e3
        has32 = any(a.dtype == np.float32 for _, a in arrays)
        for fname, kw in FILTERS.items():
            for cast16 in (False, True) if has32 else (False,):
                if cast16 and fname not in ("gzip1+shuffle", "gzip4+shuffle", "lzf+shuffle"):
                    continue
                best = min((run(arrays, kw, cast16) for _ in range(args.repeats)), key=lambda r: r[0])
                tw, tr, size = best
                print(f"| {label} | {fname} | {'float16' if cast16 else 'stored'} | {1e3 * tw / args.cases:.1f} "
                      f"| {1e3 * tr / args.cases:.1f} | {size / args.cases / 1e3:.0f} |", flush=True)
        print(f"| {label} | (raw bytes in memory) | | | | {raw:.0f} |")


if __name__ == "__main__":
    main()
