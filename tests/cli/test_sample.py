"""`uqseg sample` through the real entry point: layout, defaults, resume, sharding, errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from tests.bayes.fixtures import make_checkpoint, make_members, make_predict, run_cli
from uqseg_cli.bayes.measures import MEASURES, SampleSums, uncertainty_maps
from uqseg_cli.io.store import StageFile

torch.set_num_threads(1)
ARRAYS = ("sum_p", "sum_logp", "sum_entropy", "volumes", "soft_volumes")


def _sums(path, method="mcdropout"):
    with h5py.File(path, "r") as f:
        return {cid: {a: f[f"cases/{cid}/{method}/{a}"][()] for a in ARRAYS} for cid in f["cases"]}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for cid in a:
        for name in ARRAYS:
            assert np.array_equal(a[cid][name], b[cid][name]), (cid, name)


def test_defaults_in_a_folder_write_every_method(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=2)
    make_members(tmp_path / "seg.pt", 3)
    assert run_cli("sample", "-m", "seg.pt", "-T", "6", "-q") == 0
    with StageFile("samples.h5", expect_stage="sample") as sf:
        assert sf.config["methods"] == ["mcdropout", "ensemble", "tta"]
        assert sf.config["T"] == {"mcdropout": 6, "ensemble": 3, "tta": 6}
        assert sf.config["mcdropout_mode"] == "cached"
        cv = sf.case("case00")
        assert cv.spacing == (0.8, 0.8)
        for method, T in sf.config["T"].items():
            g = sf.h5[f"cases/case00/{method}"]
            assert g.attrs["T"] == T
            assert g["sum_p"].shape == (3, 20, 24) and g["sum_p"].dtype == np.float32
            assert g["sum_logp"].dtype == np.float32 and g["sum_entropy"].shape == (20, 24)
            assert g["volumes"].shape == (T, 3) and g["volumes"].dtype == np.float64
            # every sample's argmax covers the image: volumes add up to the image area in "ml" (mm^2 / 1000)
            np.testing.assert_allclose(g["volumes"][()].sum(1), 20 * 24 * 0.64 / 1000)
            np.testing.assert_allclose(g["soft_volumes"][()].sum(1), 20 * 24 * 0.64 / 1000, rtol=1e-5)
            np.testing.assert_allclose(g["sum_p"][()].sum(0), T, rtol=1e-5)
            assert "samples" not in g
        assert list(sf.h5["cases/case00/tta"].attrs["transforms"]) == [
            "identity", "flip-w", "flip-h", "rot180", "transpose", "rot90"]
        assert list(sf.h5["cases/case00/ensemble"].attrs["members"]) == ["seg.pt", "seg.member1.pt", "seg.member2.pt"]
        assert cv.get("segmentation").shape == (20, 24)  # lineage: read through to predict.h5


def test_single_checkpoint_skips_ensemble_unless_asked(tmp_path, capsys):
    make_predict(tmp_path / "predict.h5", n_cases=1)
    ck = make_checkpoint(tmp_path / "seg.pt")
    out = tmp_path / "s.h5"
    assert run_cli("sample", "-i", tmp_path / "predict.h5", "-m", ck, "-T", "3", "-o", out) == 0
    assert "ensemble skipped" in capsys.readouterr().err
    with StageFile(out) as sf:
        assert sf.config["methods"] == ["mcdropout", "tta"]
    code = run_cli("sample", "-i", tmp_path / "predict.h5", "-m", ck, "--method", "ensemble", "-o", tmp_path / "e.h5")
    err = capsys.readouterr().err
    assert code == 2 and "needs at least 2 checkpoints" in err and "Traceback" not in err
    assert not (tmp_path / "e.h5").exists()


def test_errors_are_one_line(tmp_path, capsys):
    make_predict(tmp_path / "predict.h5", n_cases=1)
    ck = make_checkpoint(tmp_path / "seg.pt")
    nodrop = make_checkpoint(tmp_path / "nodrop.pt", dropout=0.0)
    cases = [
        (("-i", tmp_path / "missing.h5", "-m", ck), "missing.h5"),
        (("-i", tmp_path / "predict.h5", "-m", tmp_path / "nope.pt"), "nope.pt"),
        (("-i", tmp_path / "predict.h5", "-m", ck, "--method", "bayes"), "--method bayes: unknown"),
        (("-i", tmp_path / "predict.h5", "-m", nodrop, "--method", "mcdropout"), "no dropout layer"),
        (("-i", tmp_path / "predict.h5", "-m", ck, "--method", "tta", "--tta-intensity", "-1"), "tta-intensity"),
    ]
    for args, msg in cases:
        code = run_cli("sample", *args, "-o", tmp_path / "x.h5")
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert msg in err and "Traceback" not in err, err
    # a checkpoint with a different number of classes fails each case (exit 1), naming file and case
    make_predict(tmp_path / "p2.h5", n_cases=1)
    with h5py.File(tmp_path / "p2.h5", "a") as f:
        del f["cases/case00/probabilities"]
        f["cases/case00/probabilities"] = np.zeros((2, 20, 24), np.float16)
    code = run_cli("sample", "-i", tmp_path / "p2.h5", "-m", ck, "--method", "tta", "-o", tmp_path / "y.h5")
    err = capsys.readouterr().err
    assert code == 1 and "case case00" in err and "2 classes" in err


def test_resume_after_interrupt_writes_identical_sums(tmp_path, monkeypatch):
    make_predict(tmp_path / "predict.h5", n_cases=3)
    ck = make_checkpoint(tmp_path / "seg.pt")
    ref = tmp_path / "ref.h5"
    args = ("sample", "-i", tmp_path / "predict.h5", "-m", ck, "--method", "mcdropout,tta", "-T", "4", "-q")
    assert run_cli(*args, "-o", ref) == 0

    import uqseg_cli.bayes.sampling as S

    real = S.sample_case
    calls = {"n": 0}

    def flaky(case_id, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # killed while the second case is in flight (after the first was journalled)
            raise KeyboardInterrupt
        return real(case_id, *a, **kw)

    out = tmp_path / "samples.h5"
    monkeypatch.setattr(S, "sample_case", flaky)
    assert run_cli(*args, "-o", out) == 130
    assert not out.exists() and len(list((tmp_path / "samples.h5.partial").glob("*.h5"))) == 1
    monkeypatch.setattr(S, "sample_case", real)
    assert run_cli(*args, "-o", out) == 0
    for method in ("mcdropout", "tta"):
        _assert_same(_sums(ref, method), _sums(out, method))


def test_sharded_parts_equal_one_run(tmp_path):
    make_predict(tmp_path / "predict.h5", n_cases=3)
    ck = make_checkpoint(tmp_path / "seg.pt")
    args = ("sample", "-i", tmp_path / "predict.h5", "-m", ck, "--method", "mcdropout", "-T", "3", "-q")
    assert run_cli(*args, "-o", tmp_path / "all.h5") == 0
    for k in range(2):
        assert run_cli(*args, "-o", tmp_path / "s.h5", "--num-parts", "2", "--part-id", str(k)) == 0
    whole = _sums(tmp_path / "all.h5")
    p0, p1 = _sums(tmp_path / "s.part0-of-2.h5"), _sums(tmp_path / "s.part1-of-2.h5")
    assert set(p0) == {"case00", "case02"} and set(p1) == {"case01"}
    _assert_same(whole, {**p0, **p1})
    # a different seed gives different samples
    assert run_cli(*args, "-o", tmp_path / "seed1.h5", "--seed", "1") == 0
    assert not np.array_equal(_sums(tmp_path / "seed1.h5")["case00"]["sum_p"], whole["case00"]["sum_p"])


def test_keep_samples_match_sums(tmp_path):
    make_predict(tmp_path / "predict.h5", n_cases=1, shape=(5, 20, 24))  # a volume, 2D model slice-wise
    ck = make_checkpoint(tmp_path / "seg.pt")
    out = tmp_path / "samples.h5"
    assert run_cli("sample", "-i", tmp_path / "predict.h5", "-m", ck, "-T", "5", "--keep-samples",
                   "--batch-size", "2", "-o", out, "-q") == 0
    with h5py.File(out, "r") as f:
        for method in ("mcdropout", "tta"):
            g = f[f"cases/case00/{method}"]
            s = g["samples"][()].astype(np.float64)
            assert s.shape == (5, 3, 5, 20, 24) and g["samples"].dtype == np.float16
            np.testing.assert_allclose(s.sum(0), g["sum_p"][()], atol=5 * 1e-3)
            # measures of the kept samples agree with those of the sums
            a = uncertainty_maps(SampleSums.from_numpy(g["sum_p"][()], g["sum_logp"][()], g["sum_entropy"][()], 5))
            b = uncertainty_maps(s / s.sum(1, keepdims=True))
            for m in ("confidence", "entropy", "expected_entropy"):
                np.testing.assert_allclose(a[m].numpy(), b[m], atol=5e-3, err_msg=m)


@pytest.mark.parametrize("dims", [3])
def test_volume_with_3d_model(tmp_path, dims):
    make_predict(tmp_path / "predict.h5", n_cases=1, shape=(10, 20, 18))
    make_members(tmp_path / "seg3d.pt", 2, dims=3)
    out = tmp_path / "samples.h5"
    assert run_cli("sample", "-i", tmp_path / "predict.h5", "-m", tmp_path / "seg3d.pt", "-T", "3", "-o", out,
                   "-q") == 0
    with StageFile(out) as sf:
        assert sf.config["T"] == {"mcdropout": 3, "ensemble": 2, "tta": 3}
        assert list(sf.h5["cases/case00/tta"].attrs["transforms"]) == ["identity", "flip-w", "flip-h"]
        for m in sf.config["methods"]:
            p = sf.h5[f"cases/case00/{m}/sum_p"][()]
            assert p.shape == (3, 10, 20, 18)
            np.testing.assert_allclose(p.sum(0), sf.config["T"][m], rtol=1e-5)
        maps = uncertainty_maps(SampleSums.from_numpy(
            *(sf.h5[f"cases/case00/ensemble/{a}"][()] for a in ("sum_p", "sum_logp", "sum_entropy")), 2))
        assert set(maps) == set(MEASURES) and float(maps["mutual_information"].max()) > 0


def test_resume_after_sigkill_writes_identical_sums(tmp_path):
    """A real kill (SIGKILL) while cases are in flight; the rerun completes with bit-identical sums."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    make_predict(tmp_path / "predict.h5", n_cases=8, shape=(64, 64))
    ck = make_checkpoint(tmp_path / "seg.pt")
    args = ["sample", "-i", str(tmp_path / "predict.h5"), "-m", str(ck), "--method", "mcdropout,tta", "-T", "8",
            "-q", "--device", "cpu"]
    assert run_cli(*args, "-o", tmp_path / "ref.h5") == 0
    out = tmp_path / "samples.h5"
    # bit-identical sums need the same thread count as the in-process reference (float reductions differ)
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, "-m", "uqseg_cli", *args, "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "samples.h5.partial"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(partial.glob("*.h5")):
        time.sleep(0.005)
    # 8 cases of several forward passes each: the first journalled case leaves the others in flight
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert run_cli(*args, "-o", out) == 0
    for method in ("mcdropout", "tta"):
        _assert_same(_sums(tmp_path / "ref.h5", method), _sums(out, method))


def test_agreement_features_from_stored_samples(tmp_path, monkeypatch, capsys):
    """sample → uncertainty → aggregate: the agreement rows equal their definitions on the raw stored samples."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=2)
    make_members(tmp_path / "seg.pt", 3)
    assert run_cli("sample", "-m", "seg.pt", "-T", "5", "--keep-samples", "-q") == 0
    assert run_cli("uncertainty", "-q") == 0
    assert run_cli("aggregate", "-o", "features.csv", "-q") == 0
    feats = pd.read_csv("features.csv")
    checked = 0
    with h5py.File("samples.h5", "r") as f, h5py.File("predict.h5", "r") as p:
        for cid in ("case00", "case01"):
            seg = p[f"cases/{cid}/segmentation"][()]
            for method in ("mcdropout", "ensemble", "tta"):
                g = f[f"cases/{cid}/{method}"]
                samples = g["samples"][()].astype(np.float64)  # (T, K, H, W) float16 as stored
                T, K = samples.shape[:2]
                lab = g["votes"][()]
                # votes from the argmax of the float32 sums' own samples; float16 storage can flip exact ties,
                # so compare the counts to the stored probabilities' argmax where it is unambiguous
                am = samples.argmax(1)
                top2 = np.sort(samples, axis=1)
                clear = (top2[:, -1] - top2[:, -2] > 2e-3).all(0)
                for k in range(K):
                    assert np.array_equal(lab[k][clear], (am == k).sum(0)[clear])
                fg, sfg = am > 0, seg > 0
                row = feats[(feats.case == cid) & (feats.method == method) & (feats.measure == "agreement")]
                got = dict(zip(row.region, row.value, strict=True))
                if clear.all():
                    checked += 1
                    union = fg.any(0).sum()
                    assert got["iou_samples"] == pytest.approx(fg.all(0).sum() / union if union else 1.0)
                    # overlap of sample t with S: voxels where both agree on the same foreground class
                    inter = [sum(((am[t] == k) & (seg == k)).sum() for k in range(1, K)) for t in range(T)]
                    den = [fg[t].sum() + sfg.sum() for t in range(T)]
                    d = [2 * i / n if n else 1.0 for i, n in zip(inter, den, strict=True)]
                    assert got["dice_to_final"] == pytest.approx(np.mean(d))
                pbar = 1 - samples[:, 0].mean(0)
                soft = 2 * (pbar * sfg).sum() / (pbar.sum() + sfg.sum())
                assert got["soft_dice"] == pytest.approx(soft, abs=2e-3)  # float16 samples vs float32 sums
                shape = feats[(feats.case == cid) & (feats.method == method) & (feats.measure == "shape")]
                assert set(shape.region) == {"components", "area_fraction", "border_fraction"}
    assert checked >= 3  # most case/method pairs have no near-tie in the float16 samples


def test_ensemble_of_separately_trained_checkpoints_uses_each_ones_normalisation(tmp_path, monkeypatch):
    """Checkpoints trained in separate runs measure their own mean/std: each member preprocesses the image itself."""
    from uqseg_cli.models.inference import Predictor

    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=1)
    a = make_checkpoint(tmp_path / "a.pt", seed=1, mean=0.4, std=0.3)
    b = make_checkpoint(tmp_path / "b.pt", seed=2, mean=0.5, std=0.25)
    assert run_cli("sample", "-m", f"{a},{b}", "--method", "ensemble", "-q") == 0
    with h5py.File("samples.h5", "r") as f, h5py.File("predict.h5", "r") as p:
        image = p["cases/case00/image"][()]
        got = f["cases/case00/ensemble/sum_p"][()]
    ref = sum(Predictor.from_checkpoint(c, torch.device("cpu"), 8, False).predict_proba(image, "case00").numpy()
              for c in (a, b))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # a member on another grid is still refused, naming the option
    c = make_checkpoint(tmp_path / "c.pt", dims=3)
    assert run_cli("sample", "-m", f"{a},{c}", "--method", "ensemble", "-o", "x.h5", "-q") != 0
