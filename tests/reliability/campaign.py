"""The whole fault and bad-input campaign of issue 12 (minutes, not part of CI; CI runs the matrix and one test
per fault in tests/reliability/). Run from the repository root:

    python -m tests.reliability.campaign [--seed 0] [--kills 2] [--json campaign.json]

1. bad inputs: every row of the matrix plus generated variants (mask values, non-finite voxels, crafted HDF5 files
   for every command that reads one, foreign checkpoints for every command that loads one, manifests, truncated
   files), each through the real entry point in this process: exit code, no traceback, no input changed;
2. kills: SIGKILL, SIGINT and SIGTERM at random moments of predict, sample and uncertainty in real processes; then
   the same command again: exit 130/143 (or 0 if the run was already done), no success line after a signal, and
   the resumed output bitwise equal to a run never interrupted (no case lost or mixed);
3. disk full (RLIMIT_FSIZE) at journal and at consolidation size in every HDF5 stage, and in a CSV stage: exit 1,
   one line naming the file, journal kept, resume completes with identical numbers.

Prints one line per check and a summary; exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from tests.helpers import run_cli
from tests.models.fixtures import write_disks
from tests.reliability import matrix as M
from tests.reliability.world import build_world, copy_world, hashes, uqseg_subprocess


def run_captured(*args) -> tuple[int, str]:
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = run_cli(*args)
    return code, err.getvalue() + out.getvalue()


# ------------------------------------------------------------------------------------------ 1. bad inputs
def variants() -> list[M.Row]:
    P = M.P
    rows: list[M.Row] = list(M.ROWS)
    for vals in ([0, 2, 255], [0, 254], [0, 1, 2], [0, 1, 255], [3], [0, 64], [0, 100, 200], [128, 255]):
        rows.append(M.Row(f"mask-{'-'.join(map(str, vals))}", "9",
                          ["predict", "-i", "images", "--masks", "masks2", "-o", "p2.h5", *P], 1, r"not labels",
                          (lambda v: lambda d: M._masks_with(d, v))(vals), one_line=False))

    def mask16(d: Path) -> None:
        shutil.copytree(d / "masks", d / "masks2")
        m = np.zeros((30, 40), np.uint16)
        m[:, :20] = 65535
        M._png(d / "masks2" / "c01.png", m)

    rows.append(M.Row("mask-16bit-65535", "9", ["predict", "-i", "images", "--masks", "masks2", "-o", "p2.h5", *P],
                      1, r"65535", mask16, one_line=False))
    for name, bad, pat in (("all-nan", "all", "NaN"), ("nan-corner", "corner", "NaN")):
        def ct(d: Path, bad=bad) -> None:
            M._ct(d, np.nan)
            if bad == "all":
                M._nifti(d / "ct" / "v1.nii.gz", np.full((3, 16, 20), np.nan, np.float32))

        rows.append(M.Row(f"nifti-{name}", "8", ["predict", "-i", "ct", "-m", "ct.pt", "-o", "p2.h5", *P], 1, pat,
                          ct, one_line=False))
    rows.append(M.Row("nan-policy-min", "8", ["predict", "-i", "ct", "-m", "ct.pt", "-o", "p2.h5", "--nan-policy",
                                              "min", *P], 0, r"^$", lambda d: M._ct(d, np.nan)))
    # crafted stage files for every command that reads one
    readers = {
        "predict.h5": [["sample", "-i", "crafted.h5", "-o", "s2.h5", *P], ["evaluate", "-i", "crafted.h5", "-o",
                       "e.csv", "-q"], ["info", "crafted.h5"]],
        "samples.h5": [["uncertainty", "-i", "crafted.h5", "-o", "u2.h5", "-q"], ["info", "crafted.h5"]],
        "uncertainty.h5": [["aggregate", "-i", "crafted.h5", "-o", "f2.csv", "-q"],
                           ["score", "-i", "crafted.h5", "--method", "tta", "--measure", "entropy", "-o", "s.csv",
                            "-q"], ["info", "crafted.h5"]],
    }
    for src, cmds in readers.items():
        for kind in ("link", "meta-link", "external", "virtual"):
            if kind in ("external", "virtual") and src != "predict.h5":
                continue
            for cmd in cmds:
                rows.append(M.Row(f"crafted-{kind}-{src.split('.')[0]}-{cmd[0]}", "13", cmd, 2, r"refused",
                                  M._craft(kind, src=src), one_line=False))
    # foreign checkpoints for every command that loads one
    kinds = {
        "text": (M._write("bad.pt", "not a checkpoint\n"), r"it is a text file"),
        "empty": (M._write("bad.pt", b""), r"it is an empty file"),
        "zip": (M._write("bad.pt", b"PK\x03\x04" + b"\0" * 100), r"not a uqseg"),
        "pickled": (M._pickled_code("bad.pt"), r"refused: the file carries pickled Python objects"),
        "hdf5": (lambda d: shutil.copy(d / "predict.h5", d / "bad.pt"), r"it is an HDF5 file"),
    }
    for kind, (setup, pat) in kinds.items():
        for cmd in (["predict", "-i", "images", "-m", "bad.pt", "-o", "p2.h5", *P],
                    ["sample", "-m", "bad.pt", "-o", "s2.h5", *P],
                    ["score", "--method", "tta", "--measure", "entropy", "--model", "bad.pt", "-o", "s.csv", "-q"],
                    ["explain", "-i", "uncertainty.h5", "--model", "bad.pt", "-o", "ex", "-q"]):
            rows.append(M.Row(f"checkpoint-{kind}-{cmd[0]}", "10", cmd, 2, pat, setup, ["weights_only"],
                              one_line=False))
    manifests = {
        "tab-id": ('case,image\n"a\tb",images/c00.png\n', 2, r"control character"),
        "dotdot-id": ("case,image\n..,images/c00.png\n", 2, r"invalid case id '\.\.'"),
        "backslash-id": ("case,image\na\\b,images/c00.png\n", 2, r"holds '/' or"),
        "header-only": ("case,image\n", 2, r"no rows"),
        "no-image-column": ("case,path\nc00,images/c00.png\n", 2, r"needs columns"),
        "missing-image": ("case,image\nc00,images/c00.png\nc01,images/nope.png\n", 1, r"file not found"),
        "duplicate-ids": ("case,image\nc00,images/c00.png\nc00,images/c01.png\n", 2, r"duplicate case id"),
        "bom-and-spaces": ("\ufeffcase , image \n c00 , images/c00.png\n", 0, r"^$"),
    }
    for name, (text, code, pat) in manifests.items():
        rows.append(M.Row(f"manifest-{name}", "11", ["predict", "-i", "m.csv", "-o", "p2.h5", *P], code, pat,
                          M._manifest(text), one_line=False))
    for cmd in (["sample", "-i", "trunc.h5", "-o", "s2.h5", *P], ["uncertainty", "-i", "trunc.h5", "-o", "u2.h5",
                                                                  "-q"], ["info", "trunc.h5"]):
        rows.append(M.Row(f"truncated-h5-{cmd[0]}", "10", cmd, 2, r"not a readable HDF5 file",
                          lambda d: (d / "trunc.h5").write_bytes((d / "predict.h5").read_bytes()[:1024])))
    return rows


def bad_inputs(world: Path, tmp: Path, report: list) -> None:
    rows = variants()
    for i, row in enumerate(rows):
        d = copy_world(world, tmp / f"bad{i}")
        old = Path.cwd()
        os.chdir(d)
        problems = []
        try:
            if row.setup is not None:
                row.setup(d)
            before = hashes(d)
            code, err = run_captured(*row.args)
            if "Traceback" in err:
                problems.append("traceback")
            if code != row.code:
                problems.append(f"exit {code} != {row.code}")
            if not re.search(row.msg, err):
                problems.append(f"message {row.msg!r} missing")
            if row.code == 2 and row.one_line and err.count("\n") != 1:
                problems.append("not one line")
            for text in row.never:
                if text in err:
                    problems.append(f"says {text!r}")
            after = hashes(d)
            changed = [k for k in before if after.get(k) != before[k]]
            if changed:
                problems.append(f"changed {changed}")
        except Exception as exc:  # a setup or harness failure is a failed check too
            problems.append(f"harness: {type(exc).__name__}: {exc}")
        finally:
            os.chdir(old)
            shutil.rmtree(d, ignore_errors=True)
        report.append({"part": "bad-input", "id": row.id, "item": row.item, "ok": not problems,
                       "problems": problems, "exit": row.code})
        print(f"{'ok ' if not problems else 'FAIL'} bad-input {row.id}: exit {row.code} {'; '.join(problems)}",
              flush=True)


# ------------------------------------------------------------------------------------------ 2. kills
def _arrays(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f["cases"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def kill_world(tmp: Path) -> Path:
    from tests.models.fixtures import random_checkpoint

    d = tmp / "kw"
    images, _ = write_disks(d, 8, size=(64, 80))
    random_checkpoint(d / "seg.pt", input_size=(64, 80))
    return d


STAGES = {
    "predict": (["predict", "-i", "images", "-m", "seg.pt", "--device", "cpu", "--threads", "1"], "predict.h5"),
    "sample": (["sample", "-m", "seg.pt", "--method", "tta", "-T", "8", "--device", "cpu"], "samples.h5"),
    "uncertainty": (["uncertainty"], "uncertainty.h5"),
}


def kills(tmp: Path, report: list, rng: random.Random, per: int) -> None:
    base = kill_world(tmp)
    ref = tmp / "ref"
    shutil.copytree(base, ref)
    env1 = {"OMP_NUM_THREADS": "1"}
    for args, _ in STAGES.values():  # the uninterrupted reference chain, in real processes
        p = uqseg_subprocess(*args, "-q", cwd=ref, env_extra=env1)
        assert p.wait(timeout=600) == 0, p.stderr.read()
    for stage, (args, out) in STAGES.items():
        for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGTERM):
            for k in range(per):
                d = tmp / f"kill-{stage}-{sig.name}-{k}"
                shutil.copytree(ref, d)
                (d / out).unlink()
                delay = rng.uniform(0.5, 6.0)
                p = uqseg_subprocess(*args, cwd=d, env_extra=env1)
                t0 = time.monotonic()
                while p.poll() is None and time.monotonic() - t0 < delay:
                    time.sleep(0.01)
                sent = p.poll() is None
                if sent:
                    p.send_signal(sig)
                _, err = p.communicate(timeout=600)
                problems = []
                expect = {signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 143}[sig] if sent else 0
                if p.returncode != expect and not (sent and p.returncode == 0):  # the signal may come after the end
                    problems.append(f"exit {p.returncode} != {expect}")
                if "Traceback" in err:
                    problems.append("traceback")
                if sent and p.returncode in (130, 143) and "wrote" in err:
                    problems.append("success line after the signal")
                if (d / out).exists() and p.returncode != 0:
                    with h5py.File(d / out) as f:
                        if sorted(f["cases"]) != sorted(h5py.File(ref / out)["cases"]):
                            problems.append("an incomplete file looks complete")
                r = uqseg_subprocess(*args, "-q", cwd=d, env_extra=env1)
                if r.wait(timeout=600) != 0:
                    problems.append(f"resume exit {r.returncode}: {r.stderr.read()[-300:]}")
                elif not _same(_arrays(d / out), _arrays(ref / out)):
                    problems.append("resumed output differs from the uninterrupted run")
                report.append({"part": "kill", "id": f"{stage}-{sig.name}-{k}", "ok": not problems,
                               "problems": problems, "delay_s": round(delay, 2), "exit": p.returncode,
                               "signalled": sent and p.returncode != 0})
                print(f"{'ok ' if not problems else 'FAIL'} kill {stage} {sig.name} after {delay:.1f}s: exit "
                      f"{p.returncode} {'; '.join(problems)}", flush=True)
                shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------ 3. disk full
def _limit(n: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))


def disk_full(world: Path, tmp: Path, report: list) -> None:
    cases = {
        "predict": (["predict", "-i", "images", "--masks", "masks", "-o", "x.h5", "--device", "cpu"], "predict.h5"),
        "sample": (["sample", "-m", "seg.pt", "--method", "tta", "-T", "2", "-o", "x.h5", "--device", "cpu"],
                   "samples.h5"),
        "uncertainty": (["uncertainty", "--measure", "entropy", "-o", "x.h5"], "uncertainty.h5"),
    }
    for stage, (args, ref) in cases.items():
        for where in ("journal", "consolidation"):
            d = copy_world(world, tmp / f"full-{stage}-{where}")
            size = (d / ref).stat().st_size
            limit = 2048 if where == "journal" else size // 2
            p = uqseg_subprocess(*args, "-q", cwd=d, preexec_fn=_limit(limit))
            _, err = p.communicate(timeout=600)
            problems = []
            if p.returncode != 1:
                problems.append(f"exit {p.returncode}")
            if "Traceback" in err or err.count("\n") != 1 or "no space left" not in err or "x.h5" not in err:
                problems.append(f"message: {err.strip()[-200:]!r}")
            if (d / "x.h5").exists():
                problems.append("an output exists")
            r = uqseg_subprocess(*args, "-q", cwd=d)
            if r.wait(timeout=600) != 0:
                problems.append(f"resume exit {r.returncode}")
            else:
                a, b = _arrays(d / "x.h5"), _arrays(d / ref)
                if stage != "sample" and not _same(a, b):  # sample: x.h5 has T=2 tta like the world
                    problems.append("resumed output differs")
            report.append({"part": "disk-full", "id": f"{stage}-{where}", "ok": not problems, "problems": problems})
            print(f"{'ok ' if not problems else 'FAIL'} disk-full {stage} at {where}: {'; '.join(problems)}",
                  flush=True)
            shutil.rmtree(d, ignore_errors=True)
    d = copy_world(world, tmp / "full-aggregate")
    p = uqseg_subprocess("aggregate", "-o", "f2.csv", "-q", cwd=d, preexec_fn=_limit(512))
    _, err = p.communicate(timeout=600)
    ok = (p.returncode == 1 and err.count("\n") == 1 and "f2.csv: no space left" in err
          and not (d / "f2.csv").exists())
    report.append({"part": "disk-full", "id": "aggregate-csv", "ok": ok, "problems": [] if ok else [err[-200:]]})
    print(f"{'ok ' if ok else 'FAIL'} disk-full aggregate (CSV): exit {p.returncode} {err.strip()[-120:]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kills", type=int, default=2, help="random moments per stage and signal")
    ap.add_argument("--parts", default="bad,kill,full")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    report: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="uqseg-campaign-") as t:
        tmp = Path(t)
        world = build_world(tmp / "world")
        parts = a.parts.split(",")
        if "bad" in parts:
            bad_inputs(world, tmp, report)
        if "kill" in parts:
            kills(tmp, report, random.Random(a.seed), a.kills)
        if "full" in parts:
            disk_full(world, tmp, report)
    summary = {}
    for r in report:
        s = summary.setdefault(r["part"], {"checks": 0, "failed": 0})
        s["checks"] += 1
        s["failed"] += not r["ok"]
    print(json.dumps(summary))
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "checks": report}, indent=1))
    return 1 if any(not r["ok"] for r in report) else 0


if __name__ == "__main__":
    sys.exit(main())
