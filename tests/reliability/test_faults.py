"""Issue 12: data loss, mixing and leftovers — one test per numbered item that is not a row of the matrix."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers import run_captured, run_cli
from tests.models.fixtures import write_disks
from tests.reliability.world import REPO, uqseg_subprocess
from uqseg_cli.errors import StoreError
from uqseg_cli.io.lock import OutputLock
from uqseg_cli.io.store import StageFile
from uqseg_cli.models.inference import Predictor


def _arrays(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        for cid, g in f["cases"].items():
            for name, ds in g.items():
                if isinstance(ds, h5py.Dataset):
                    out[(cid, name)] = ds[()]
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---------------------------------------------------------------- 2: the parent is checked for every case read
def test_parent_replaced_during_a_run_is_refused_for_later_cases(site):
    other = site / "other.h5"
    shutil.copy(site / "predict.h5", other)
    with h5py.File(other, "r+") as f:
        f.attrs["fingerprint"] = "f" * 32
    with StageFile(site / "samples.h5", expect_stage="sample") as sf:
        assert sf.case("c00").get("segmentation").shape == (30, 40)  # through the lineage
        os.replace(other, site / "predict.h5")  # another run rewrote the parent meanwhile
        with pytest.raises(StoreError, match="predict.h5 has changed since"):
            sf.case("c01").get("segmentation")
        with pytest.raises(StoreError):  # and keeps refusing (it used to read on without the parent)
            sf.case("c02").get("segmentation")


# ---------------------------------------------------------------- 3: --overwrite keeps the old output until done
def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(site, monkeypatch, capsys):
    before = (site / "predict.h5").read_bytes()
    args = ["predict", "-i", "images", "--masks", "masks", "--prob-dtype", "float32", "-q", "--device", "cpu"]
    real = Predictor.predict_proba
    # a rerun in which every case fails does not replace the old output
    monkeypatch.setattr(Predictor, "predict_proba", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    code, _, err = run_captured(capsys, *args, "--batch-size", "4", "--overwrite")
    assert code == 1 and "left as it was" in err and (site / "predict.h5").read_bytes() == before
    # a killed rerun neither
    calls = {"n": 0}

    def flaky(self, image, case_id=""):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, image, case_id)

    monkeypatch.setattr(Predictor, "predict_proba", flaky)
    code, _, err = run_captured(capsys, *args, "--overwrite")
    assert code == 130 and "wrote" not in err
    assert (site / "predict.h5").read_bytes() == before
    # the interrupted --overwrite run resumes (even without the flag) and then replaces the file in one step
    monkeypatch.setattr(Predictor, "predict_proba", real)
    code, _, err = run_captured(capsys, *[a for a in args if a != "-q"])
    assert code == 0 and "resuming an interrupted --overwrite run" in err
    with StageFile(site / "predict.h5") as sf:
        assert sf.config["prob_dtype"] == "float32" and len(sf.case_ids) == 4
    assert not (site / "predict.h5.partial").exists()


# ---------------------------------------------------------------- 5 and 15: ensemble members, train lock
FAST = ["-m", "unet-small", "--input-size", "32x32", "--batch-size", "2", "--epochs", "1", "--val-fraction", "0",
        "-q", "--device", "cpu"]


def test_train_records_members_and_removes_stale_ones(tmp_path, capsys):
    from uqseg_cli.errors import InputError
    from uqseg_cli.models.checkpoint import read_checkpoint, resolve_members

    images, masks = write_disks(tmp_path, 3)
    out = tmp_path / "seg.pt"
    assert run_cli("train", "-i", images, "--masks", masks, "-o", out, "--members", "2", *FAST) == 0
    assert [p.name for p in resolve_members(out)] == ["seg.pt", "seg.member1.pt"]
    assert read_checkpoint(out)[0].member_files == ["seg.pt", "seg.member1.pt"]
    member1 = (tmp_path / "seg.member1.pt").read_bytes()
    shutil.copy(out, tmp_path / "seg.member1.pt")  # someone replaced member 1
    with pytest.raises(InputError, match="seg.member1.pt: is not the member recorded in seg.pt"):
        resolve_members(out)
    (tmp_path / "seg.member1.pt").write_bytes(member1)
    # without --overwrite the earlier member is not silently left behind
    assert run_cli("train", "-i", images, "--masks", masks, "-o", out, *FAST) == 2
    assert run_cli("train", "-i", images, "--masks", masks, "-o", out, "--overwrite", *FAST) == 0
    assert sorted(p.name for p in tmp_path.glob("seg*.pt")) == ["seg.pt"]
    assert resolve_members(out) == [out]
    # a stray member next to a checkpoint that records its members is never picked up
    shutil.copy(out, tmp_path / "seg.member1.pt")
    assert resolve_members(out) == [out]
    assert not list(tmp_path.glob(".*tmp*"))


def test_train_takes_the_output_lock_and_cleans_dead_temporaries(tmp_path, capsys):
    images, masks = write_disks(tmp_path, 3)
    out = tmp_path / "seg.pt"
    dead = tmp_path / f".seg.pt.tmp-{_dead_pid()}"
    dead.write_bytes(b"half a checkpoint")
    with OutputLock(out):
        code, _, err = run_captured(capsys, "train", "-i", images, "--masks", masks, "-o", out, *FAST)
    assert code == 2 and "another uqseg process is writing this output" in err and not out.exists()
    code, _, err = run_captured(capsys, "train", "-i", images, "--masks", masks, "-o", out, *FAST)
    assert code == 0 and out.exists() and not dead.exists() and "leftover" in err


# ---------------------------------------------------------------- 16: leftovers of dead processes
def test_leftovers_of_dead_processes_are_removed_live_ones_kept(site, capsys):
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp_dead = site / f".uncertainty.h5.tmp-{dead}"
        tmp_dead.write_bytes(b"x")
        aside = site / f"uncertainty.h5.partial.corrupt-20260101-000000-{dead}"
        aside.mkdir()
        (aside / "c00.h5").write_bytes(b"y")
        tmp_live = site / f".uncertainty.h5.tmp-{live.pid}"
        tmp_live.write_bytes(b"z")
        code, _, err = run_captured(capsys, "uncertainty", "--measure", "entropy", "--overwrite", "-q")
        assert code == 0
        assert not tmp_dead.exists() and not aside.exists() and tmp_live.exists()
        assert "removed 2 leftover(s) of killed runs" in err
    finally:
        live.kill()
        live.wait()


# ---------------------------------------------------------------- 11: ids with ": " survive the failed list
def test_case_ids_with_colon_space_round_trip_through_the_failed_list(site):
    (site / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (site / "m.csv").write_text("case,image\nIMD: 013,bad.png\nc00,images/c00.png\n")
    assert run_cli("predict", "-i", "m.csv", "-o", "p2.h5", "-q", "--device", "cpu") == 1
    with StageFile(site / "p2.h5") as sf:
        assert sf.case_ids == ["c00"] and list(sf.failed) == ["IMD: 013"]
        assert "cannot decode image" in sf.failed["IMD: 013"]


# ---------------------------------------------------------------- 6: disk full (RLIMIT_FSIZE, no root needed)
def _limited(limit: int):
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="no RLIMIT_FSIZE on this platform")
def test_disk_full_is_one_line_keeps_the_journal_and_resumes(site):
    args = ["predict", "-i", "images", "--masks", "masks", "-o", "p2.h5", "-q", "--device", "cpu"]
    ref = _arrays(site / "predict.h5")
    # 1. the per-case journal files fit, the consolidated output does not
    journal_size = max(p.stat().st_size for p in [site / "predict.h5"]) // 2
    p = uqseg_subprocess(*args, cwd=site, preexec_fn=_limited(journal_size))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "p2.h5: no space left on device" in lines[0] and "Traceback" not in err, err
    assert not (site / "p2.h5").exists()
    assert len(list((site / "p2.h5.partial").glob("*.h5"))) == 4  # every finished case kept
    # 2. space freed: the same command resumes and completes, numbers identical to a run that never failed
    assert run_cli(*args) == 0
    assert _same(_arrays(site / "p2.h5"), ref)
    # 3. no room even for one case (the write that used to crash h5py, exit 139): the same one line, at once
    toy = [sys.executable, str(REPO / "tests" / "io" / "toy_stage.py"), str(site / "toy.h5"), "3"]
    p = subprocess.run(toy, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                       preexec_fn=_limited(4096), timeout=120)
    assert p.returncode == 1 and "no space left on device" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 and not (site / "toy.h5").exists()
    assert subprocess.run(toy, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120).returncode == 0


# ---------------------------------------------------------------- 7: SIGINT / SIGTERM: 130 / 143, no success line
def test_sigterm_keeps_finished_cases_and_prints_no_success_line(tmp_path):
    """SIGTERM (a scheduler's kill) through the real entry point; SIGINT: tests/io/test_runner.py (130) and the
    in-process Ctrl-C of test_overwrite_keeps_the_old_output_until_the_new_one_is_complete."""
    from tests.models.fixtures import random_checkpoint

    sig, code = signal.SIGTERM, 143
    images, _ = write_disks(tmp_path, 8, size=(64, 80))
    ck = random_checkpoint(tmp_path / "seg.pt", input_size=(64, 80))
    out = tmp_path / "predict.h5"
    args = ["predict", "-i", images, "-m", ck, "-o", out, "--threads", "1", "--device", "cpu"]
    proc = uqseg_subprocess(*args, cwd=tmp_path)
    partial = tmp_path / "predict.h5.partial"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(list(partial.glob("*.h5"))) < 1:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "wrote" not in err and "Traceback" not in err and err.rstrip().endswith("uqseg: terminated")
    kept = list(partial.glob("*.h5"))
    assert kept and not out.exists() and not list(partial.glob("*.tmp"))
    assert run_cli(*args, "-q") == 0
    assert run_cli("predict", "-i", images, "-m", ck, "-o", tmp_path / "clean.h5", "--threads", "1", "-q",
                   "--device", "cpu") == 0
    a, b = _arrays(out), _arrays(tmp_path / "clean.h5")
    assert len({k[0] for k in a}) == 8 and _same(a, b)


# ---------------------------------------------------------------- 14: two processes racing for one output
RACER = r"""
import os, sys, time
from pathlib import Path
from uqseg_cli.errors import StoreError
from uqseg_cli.io.lock import OutputLock
out, marker, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
held = overlaps = 0
for _ in range(n):
    try:
        with OutputLock(out):
            held += 1
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                overlaps += 1
                continue
            os.close(fd)
            os.unlink(marker)
    except StoreError:
        pass
print(held, overlaps)
"""


def test_two_processes_racing_for_the_lock_never_overlap(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", RACER, str(tmp_path / "out.h5"), str(tmp_path / "inside"), "3000"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    results = [tuple(map(int, p.communicate(timeout=300)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(h for h, _ in results) > 0
    assert sum(o for _, o in results) == 0, results
    assert not (tmp_path / "out.h5.lock").exists()
