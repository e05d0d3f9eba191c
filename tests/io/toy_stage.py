"""A test-only stage on the real runner: deterministic per-case arrays, optionally slow (for kill tests).

python toy_stage.py OUT N_CASES [--sleep S] [--num-parts N --part-id K] [--scale X] [--fail ID] [--overwrite]
                    [--write-behind [--fail-write ID]]

``--write-behind``: the arrays are made by ``compute`` (half the sleep) and written by the runner's writer thread
(the other half), the same bytes as without it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from uqseg_cli import signals
from uqseg_cli.errors import CaseError, UqsegError
from uqseg_cli.io.runner import StageRun, run_stage
from uqseg_cli.io.store import write_array
from uqseg_cli.rng import case_numpy_rng


def toy_process(scale: float, sleep: float, fail: set[str]):
    def process(cid: str, group) -> None:
        if cid in fail:
            raise CaseError(f"case {cid} is unreadable (test)")
        rng = case_numpy_rng(7, cid, "toy")
        for i in range(4):
            write_array(group, f"a{i}", rng.standard_normal((3, 40, 50)).astype(np.float32) * scale)
            if sleep:
                time.sleep(sleep / 4)
        group.attrs["spacing"] = np.array([1.0, 0.5])
        group.attrs["checksum"] = float(scale)

    return process


def toy_compute(scale: float, sleep: float, fail: set[str]):
    def compute(cid: str) -> list[np.ndarray]:
        if cid in fail:
            raise CaseError(f"case {cid} is unreadable (test)")
        rng = case_numpy_rng(7, cid, "toy")
        arrays = [rng.standard_normal((3, 40, 50)).astype(np.float32) * scale for _ in range(4)]
        if sleep:
            time.sleep(sleep / 2)
        return arrays

    return compute


def toy_write(scale: float, sleep: float, fail: set[str]):
    def write(cid: str, group, arrays: list[np.ndarray]) -> None:
        if cid in fail:
            raise CaseError(f"case {cid} cannot be written (test)")
        for i, a in enumerate(arrays):
            write_array(group, f"a{i}", a)
            if sleep:
                time.sleep(sleep / 8)
        group.attrs["spacing"] = np.array([1.0, 0.5])
        group.attrs["checksum"] = float(scale)

    return write


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("n", type=int)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--num-parts", type=int, default=1)
    ap.add_argument("--part-id", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--fail", action="append", default=[])
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--write-behind", action="store_true")
    ap.add_argument("--fail-write", action="append", default=[])
    a = ap.parse_args(argv)
    ids = [f"case{i:03d}" for i in range(a.n)]
    run = StageRun(
        "toy",
        a.out,
        {"scale": a.scale},
        ids,
        num_parts=a.num_parts,
        part_id=a.part_id,
        overwrite=a.overwrite,
        quiet=True,
    )
    try:
        if a.write_behind:
            res = run_stage(run, toy_write(a.scale, a.sleep, set(a.fail_write)),
                            compute=toy_compute(a.scale, a.sleep, set(a.fail)))
        else:
            res = run_stage(run, toy_process(a.scale, a.sleep, set(a.fail)))
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM through uqseg_cli.signals
        return signals.exit_code(exc)
    return 1 if res.failed else 0


if __name__ == "__main__":
    signals.install()
    try:
        sys.exit(main(sys.argv[1:]))
    except UqsegError as exc:  # as the real entry point does: one line and the documented exit code
        print(f"uqseg: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
