"""`uqseg predict` through the real entry point: predict.h5 layout, exact probabilities, resume, shards, data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import torch

from tests.conftest import REPO, shared
from tests.models.fixtures import random_checkpoint, run_cli, write_disks, write_volume
from uqseg_cli.io.cases import discover_cases, load_case
from uqseg_cli.io.store import StageFile
from uqseg_cli.models.inference import Predictor
from uqseg_cli.stages.predict import class_argmax

torch.set_num_threads(1)


def _probs(path):
    with h5py.File(path, "r") as f:
        return {cid: f[f"cases/{cid}/probabilities"][()] for cid in f["cases"]}


def test_layout_and_exact_probabilities(tmp_path, capsys):
    images, masks = write_disks(tmp_path, 3)
    ck = random_checkpoint(tmp_path / "seg.pt")
    out = tmp_path / "out" / "predict.h5"
    assert run_cli("predict", "-i", images, "--masks", masks, "-m", ck, "-o", out, "-q") == 0
    assert run_cli("predict", "-i", images, "-m", ck, "-o", tmp_path / "p32.h5", "--prob-dtype", "float32", "-q") == 0
    pred = Predictor.from_checkpoint(ck)
    with StageFile(out, expect_stage="predict") as sf, StageFile(tmp_path / "p32.h5") as s32:
        assert sf.case_ids == ["c00", "c01", "c02"]
        assert sf.config["class_names"] == ["background", "class1"]
        assert sf.config["checkpoint"] == os.path.join("..", "seg.pt")
        assert len(sf.config["checkpoint_fingerprint"]) == 32 and sf.config["prob_dtype"] == "float16"
        for cid in sf.case_ids:
            g = sf.h5[f"cases/{cid}"]
            case = load_case(next(s for s in discover_cases(images, masks=masks) if s.id == cid))
            ref = pred.predict_proba(case.image).numpy()
            assert g["image"].dtype == np.uint8 and np.array_equal(g["image"][()], case.image)
            assert g["probabilities"].dtype == np.float16 and g["probabilities"].shape == (2, 30, 40)
            np.testing.assert_array_equal(g["probabilities"][()], ref.astype(np.float16))
            np.testing.assert_array_equal(s32.h5[f"cases/{cid}/probabilities"][()], ref)
            np.testing.assert_array_equal(g["segmentation"][()], ref.argmax(0).astype(np.uint8))
            assert g["segmentation"].dtype == np.uint8
            np.testing.assert_array_equal(g["reference"][()], case.mask)
            assert "raters" not in g and "reference" not in s32.h5[f"cases/{cid}"]
            assert tuple(g.attrs["spacing"]) == (1.0, 1.0) and g.attrs["source"].endswith(f"{cid}.png")
            assert bool(g.attrs["train_case"]) == (cid == "c00")  # the checkpoint records c00 as seen


def test_class_argmax_matches_numpy_with_ties():
    rng = np.random.default_rng(0)
    p = rng.integers(0, 3, (4, 7, 9)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(class_argmax(p), p.argmax(0))


def test_volumes_slice_wise_and_3d(tmp_path):
    vol = write_volume(tmp_path / "v1.nii.gz", shape=(6, 20, 23))
    ck2 = random_checkpoint(tmp_path / "ct2d.pt", modality="ct", channels=1, input_size=(16, 16))
    ck3 = random_checkpoint(
        tmp_path / "ct3d.pt", arch="unet3d-small", modality="ct", channels=1, input_size=(16, 16, 16)
    )
    for ck, name in ((ck2, "p2.h5"), (ck3, "p3.h5")):
        assert (
            run_cli(
                "predict",
                "-i",
                vol,
                "--masks",
                tmp_path / "v1_mask.nii.gz",
                "-m",
                ck,
                "-o",
                tmp_path / name,
                "--batch-size",
                "4",
                "-q",
            )
            == 0
        )
        with StageFile(tmp_path / name) as sf:
            g = sf.h5["cases/v1"]
            assert g["probabilities"].shape == (2, 6, 20, 23) and g["reference"].shape == (6, 20, 23)
            np.testing.assert_allclose(tuple(g.attrs["spacing"]), (2.0, 0.8, 0.8))
            case = load_case(discover_cases(vol)[0])
            ref = Predictor.from_checkpoint(ck).predict_proba(case.image).numpy()
            np.testing.assert_array_equal(g["probabilities"][()], ref.astype(np.float16))


def test_resume_after_interrupt_gives_identical_probabilities(tmp_path, monkeypatch):
    images, _ = write_disks(tmp_path, 4)
    ck = random_checkpoint(tmp_path / "seg.pt")
    assert run_cli("predict", "-i", images, "-m", ck, "-o", tmp_path / "full.h5", "-q") == 0
    calls = {"n": 0}
    real = Predictor.predict_proba

    def flaky(self, image, case_id=""):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, image, case_id)

    monkeypatch.setattr(Predictor, "predict_proba", flaky)
    out = tmp_path / "resumed.h5"
    assert run_cli("predict", "-i", images, "-m", ck, "-o", out, "-q") == 130
    assert not out.exists() and len(list((tmp_path / "resumed.h5.partial").glob("*.h5"))) == 2
    monkeypatch.setattr(Predictor, "predict_proba", real)
    assert run_cli("predict", "-i", images, "-m", ck, "-o", out, "-q") == 0
    a, b = _probs(tmp_path / "full.h5"), _probs(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_after_sigkill(tmp_path):
    images, _ = write_disks(tmp_path, 12, size=(64, 80))
    ck = random_checkpoint(tmp_path / "seg.pt", input_size=(64, 80))
    out = tmp_path / "predict.h5"
    base = [sys.executable, "-m", "uqseg_cli", "predict", "-i", str(images), "-m", str(ck), "--threads", "1", "-q"]
    cmd = [*base, "-o", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "predict.h5.partial"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(list(partial.glob("*.h5"))) < 2:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if killed:  # the kill left a journal, never a file that looks complete
        assert not out.exists() and partial.is_dir()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert run_cli("predict", "-i", images, "-m", ck, "-o", tmp_path / "clean.h5", "--threads", "1", "-q") == 0
    a, b = _probs(out), _probs(tmp_path / "clean.h5")
    assert len(a) == 12 and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_sharding_writes_disjoint_parts(tmp_path):
    images, _ = write_disks(tmp_path, 5)
    ck = random_checkpoint(tmp_path / "seg.pt")
    out = tmp_path / "predict.h5"
    for k in (0, 1):
        assert run_cli("predict", "-i", images, "-m", ck, "-o", out, "--num-parts", "2", "--part-id", k, "-q") == 0
    with StageFile(tmp_path / "predict.part0-of-2.h5") as p0, StageFile(tmp_path / "predict.part1-of-2.h5") as p1:
        assert p0.case_ids == ["c00", "c02", "c04"] and p1.case_ids == ["c01", "c03"]
        assert p0.all_case_ids == [f"c{i:02d}" for i in range(5)]


def test_out_of_fold_prediction_uses_the_member_that_did_not_see_the_case(tmp_path):
    images, masks = write_disks(tmp_path, 6)
    ck = tmp_path / "seg.pt"
    assert (
        run_cli(
            "train",
            "-i",
            images,
            "--masks",
            masks,
            "-o",
            ck,
            "--epochs",
            "1",
            "--folds",
            "3",
            "-m",
            "unet-small",
            "--input-size",
            "32x32",
            "--val-fraction",
            "0",
            "-q",
        )
        == 0
    )
    out = tmp_path / "predict.h5"
    assert run_cli("predict", "-i", images, "--masks", masks, "-m", ck, "-o", out, "-q") == 0
    from uqseg_cli.models.checkpoint import resolve_members

    metas = [Predictor.from_checkpoint(p) for p in resolve_members(ck)]
    with StageFile(out) as sf:
        assert sf.config["out_of_fold"] and len(sf.config["checkpoints"]) == 3
        for cid in sf.case_ids:
            g = sf.h5[f"cases/{cid}"]
            k = int(g.attrs["member"])
            assert cid in metas[k].ckpt.fold_case_ids and not g.attrs["train_case"]
            img = g["image"][()]
            np.testing.assert_array_equal(
                g["probabilities"][()], metas[k].predict_proba(img).numpy().astype(np.float16)
            )
    assert run_cli("predict", "-i", images, "-m", ck, "-o", tmp_path / "m0.h5", "--no-oof", "-q") == 0
    with StageFile(tmp_path / "m0.h5") as sf:
        assert not sf.config["out_of_fold"]
        assert sum(bool(sf.h5[f"cases/{c}"].attrs["train_case"]) for c in sf.case_ids) == 4


def test_bad_checkpoint_is_one_line(tmp_path, capsys):
    images, _ = write_disks(tmp_path, 1)
    bad = tmp_path / "seg.pt"
    bad.write_bytes(b"garbage")
    assert run_cli("predict", "-i", images, "-m", bad, "-o", tmp_path / "p.h5") == 2
    err = capsys.readouterr().err
    assert "not a uqseg checkpoint" in err and err.count("\n") == 1
    ck = random_checkpoint(tmp_path / "ok.pt")
    assert run_cli("predict", "-i", images, "-m", ck, "-o", tmp_path / "p.h5", "--prob-dtype", "int8") == 2


def test_ph2_files_show_in_info(tmp_path, capsys):
    ph2 = shared("ph2")
    rows = [
        {"case": c, "image": str(ph2 / "images" / f"{c}.jpg"), "mask": str(ph2 / "masks" / f"{c}.png")}
        for c in ("IMD002", "IMD003")
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    ck = random_checkpoint(tmp_path / "seg.pt", input_size=(64, 96))
    assert run_cli("predict", "-i", tmp_path / "cases.csv", "-m", ck, "-o", tmp_path / "predict.h5", "-q") == 0
    capsys.readouterr()
    assert run_cli("info", tmp_path / "predict.h5", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["stage"] == "predict" and info["cases_complete"] == 2
    arrays = {a["name"]: a for a in info["cases"]["IMD002"]["arrays"]}
    assert arrays["image"]["shape"] == [3, 286, 382] and arrays["image"]["dtype"] == "uint8"
    assert arrays["probabilities"]["shape"] == [2, 286, 382] and arrays["probabilities"]["dtype"] == "float16"
    assert arrays["segmentation"]["shape"] == [286, 382] and arrays["reference"]["dtype"] == "uint8"


def test_qubiq_nifti_with_raters_shows_in_info(tmp_path, capsys):
    qubiq = shared("qubiq_kidney")
    ck = random_checkpoint(tmp_path / "ct.pt", modality="ct", channels=1, input_size=(64, 64))
    out = tmp_path / "predict.h5"
    # two cases only (a manifest keeps the test small)
    rows = [
        {
            "case": c,
            "image": str(qubiq / c / "image.nii.gz"),
            **{f"rater{r}": str(qubiq / c / f"task01_seg0{r}.nii.gz") for r in (1, 2, 3)},
        }
        for c in ("case01", "case02")
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "q.csv", index=False)
    assert run_cli("predict", "-i", tmp_path / "q.csv", "-m", ck, "-o", out, "-q") == 0
    capsys.readouterr()
    assert run_cli("info", out, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    arrays = {a["name"]: a for a in info["cases"]["case01"]["arrays"]}
    assert arrays["image"]["shape"] == [1, 497, 497] and arrays["image"]["dtype"] == "float32"
    assert arrays["raters"]["shape"] == [3, 497, 497] and arrays["probabilities"]["shape"] == [2, 497, 497]
    with StageFile(out) as sf:
        assert tuple(sf.h5["cases/case01"].attrs["spacing"]) == (1.0, 1.0)
