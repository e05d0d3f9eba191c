"""Consolidation cost of the crash-safe journal: copy per-case files into one HDF5 vs an index of external links.

Runs the real stage runner on CT-sized cases (default 8 cases of 3x128^3 float16 probabilities + a float32
volume), then times (a) the runner's consolidation by object copy (what uqseg does), and (b) building an index file
of HDF5 external links to the per-case files. Prints times, sizes and ratios.

    python benchmarks/bench_store.py [--cases 8] [--size 128]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from uqseg_cli.io.runner import StageRun, run_stage
from uqseg_cli.io.store import write_array


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
    s = a.size
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 300, (1, s, s, s)).astype(np.float32)
    probs = rng.dirichlet(np.ones(3), size=(s, s, s)).transpose(3, 0, 1, 2).astype(np.float16)
    ids = [f"case{i:03d}" for i in range(a.cases)]
    tmp = Path(tempfile.mkdtemp())
    try:
        def process(cid, g):
            write_array(g, "image", vol)
            write_array(g, "probabilities", probs)
            write_array(g, "segmentation", probs.argmax(0).astype(np.uint8))

        # journal + consolidate (timed as a whole, and the journal part alone)
        t0 = time.perf_counter()
        journal = tmp / "journal"
        journal.mkdir()
        for cid in ids:
            with h5py.File(journal / f"{cid}.h5", "w") as f:
                process(cid, f.create_group(f"cases/{cid}"))
        t_journal = time.perf_counter() - t0

        t0 = time.perf_counter()
        run_stage(StageRun("bench", tmp / "copy.h5", {}, ids, quiet=True), process)
        t_runner = time.perf_counter() - t0

        t0 = time.perf_counter()
        with h5py.File(tmp / "copied.h5", "w") as dst:
            for cid in ids:
                with h5py.File(journal / f"{cid}.h5", "r") as src:
                    src.copy(src[f"cases/{cid}"], dst.require_group("cases"), name=cid)
        t_copy = time.perf_counter() - t0

        t0 = time.perf_counter()
        with h5py.File(tmp / "links.h5", "w") as dst:
            g = dst.require_group("cases")
            for cid in ids:
                g[cid] = h5py.ExternalLink(str(journal / f"{cid}.h5"), f"/cases/{cid}")
        t_links = time.perf_counter() - t0

        t0 = time.perf_counter()
        with h5py.File(tmp / "copied.h5", "r") as f:
            for cid in ids:
                f[f"cases/{cid}/probabilities"][()]
        t_read_copy = time.perf_counter() - t0
        t0 = time.perf_counter()
        with h5py.File(tmp / "links.h5", "r") as f:
            for cid in ids:
                f[f"cases/{cid}/probabilities"][()]
        t_read_links = time.perf_counter() - t0
        size = os.path.getsize(tmp / "copied.h5") / 2**20
        print(f"{a.cases} cases of {s}^3 (3-class float16 probabilities + float32 image), file {size:.1f} MiB")
        print(f"write per-case journal files:        {t_journal:7.2f} s")
        print(f"full runner (journal + consolidate): {t_runner:7.2f} s")
        print(f"consolidation by copy:               {t_copy:7.2f} s  ({t_copy / t_journal:.2f}x of writing)")
        print(f"index of external links:             {t_links:7.3f} s  ({t_links / t_journal:.3f}x of writing)")
        print(f"read all probabilities: copied {t_read_copy:.2f} s, via links {t_read_links:.2f} s "
              f"(ratio {t_read_links / t_read_copy:.2f})")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
