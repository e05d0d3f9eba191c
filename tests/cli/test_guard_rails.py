"""`info` on checkpoints, `predict --masks`' Dice summary, and the one-line guard-rail warnings."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from tests.explain.synth import write_quality_model
from tests.helpers import run_captured
from tests.models.fixtures import random_checkpoint, write_disks
from tests.quality.synth import write_chain
from uqseg_cli.metrics.overlap import overlap_per_class

torch.set_num_threads(1)


def test_info_describes_a_segmenter(tmp_path, capsys):
    ck = random_checkpoint(tmp_path / "seg.pt", input_size=(32, 48))
    code, out, err = run_captured(capsys, "info", ck)
    assert code == 0, err
    assert "kind:          segmenter" in out and "unet-small" in out and "M parameters" in out
    assert "classes:       background, class1" in out and "photo, 3 channel(s), 2D grid 32x48" in out
    code, out, _ = run_captured(capsys, "info", ck, "--json")
    d = json.loads(out)
    assert d["architecture"] == "unet-small" and d["input"]["size"] == [32, 48] and d["classes"][0] == "background"
    state = torch.load(ck, weights_only=True)["state_dict"]
    assert d["parameters"] == sum(t.numel() for t in state.values())
    assert {"epochs", "best_epoch", "val_dice", "train_cases"} <= set(d["training"])


def test_info_describes_a_quality_model(tmp_path, capsys):
    write_quality_model(tmp_path / "quality.pt")
    code, out, err = run_captured(capsys, "info", tmp_path / "quality.pt")
    assert code == 0, err
    assert "kind:          quality model" in out and "test_resnet (2D CNN)" in out
    assert "predicts:      dice from tta/" in out and "grid 64x64" in out
    code, out, _ = run_captured(capsys, "info", tmp_path / "quality.pt", "--json")
    d = json.loads(out)
    assert d["framework"] == "img-seg-unc" and d["input"]["size"] == [64, 64]


def test_info_refuses_a_file_that_is_no_checkpoint(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"not a torch file")
    code, _, err = run_captured(capsys, "info", tmp_path / "x.pt")
    assert code == 2 and "not a uqseg checkpoint" in err and len(err.strip().splitlines()) == 1


def test_predict_masks_prints_the_dice_summary(tmp_path, capsys):
    images, masks = write_disks(tmp_path, 4)
    ck = random_checkpoint(tmp_path / "seg.pt")
    out = tmp_path / "predict.h5"
    code, stdout, err = run_captured(capsys, "predict", "-i", images, "--masks", masks, "-m", ck, "-o", out,
                                     "--json")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        dice = {c: float(overlap_per_class(f[f"cases/{c}/segmentation"][()], f[f"cases/{c}/reference"][()], 2)[0]
                         .mean()) for c in f["cases"]}
        assert all(f[f"cases/{c}"].attrs["dice"] == pytest.approx(v, abs=1e-12) for c, v in dice.items())
    vals = np.array(list(dice.values()))
    doc = json.loads(stdout)["dice"]
    assert doc["n"] == 4 and doc["mean"] == pytest.approx(vals.mean()) and doc["min"] == pytest.approx(vals.min())
    assert doc["median"] == pytest.approx(np.median(vals)) and doc["min_case"] == min(dice, key=dice.get)
    line = next(x for x in err.splitlines() if "Dice vs reference" in x)
    assert f"mean {vals.mean():.3f}" in line and f"median {np.median(vals):.3f}" in line
    assert f"min {vals.min():.3f} ({doc['min_case']})" in line


def test_predict_warns_about_modality_and_all_background(tmp_path, capsys, monkeypatch):
    images, _ = write_disks(tmp_path, 3)
    ck = random_checkpoint(tmp_path / "ct.pt", modality="ct")
    from uqseg_cli.models.inference import Predictor

    def background(self, image, case_id=None):
        p = torch.zeros((2, *image.shape[1:]))
        p[0] = 1.0
        return p

    monkeypatch.setattr(Predictor, "predict_proba", background)
    code, _, err = run_captured(capsys, "predict", "-i", images, "-m", ck, "-o", tmp_path / "p.h5", "-q")
    assert code == 0, err
    warnings = [x for x in err.splitlines() if x.startswith("uqseg: warning:")]
    assert len(warnings) == 2, err
    assert "trained on CT" in warnings[0] and "3 of 3 case(s) look like photos" in warnings[0]
    assert "only background for 3 of 3 case(s)" in warnings[1]


def test_score_warns_about_methods_with_different_T(tmp_path, capsys, monkeypatch):
    write_chain(tmp_path, n=8, shape=(24, 24), methods=("mcdropout", "tta"))
    with h5py.File(tmp_path / "samples.h5", "r+") as f:
        for c in f["cases"]:
            f[f"cases/{c}/tta"].attrs["T"] = 8
    monkeypatch.chdir(tmp_path)
    code, _, err = run_captured(capsys, "score", "--framework", "features", "--measure", "entropy", "--cv", "2")
    assert code == 0, err
    warned = [x for x in err.splitlines() if "different sample counts" in x]
    assert len(warned) == 1 and "mcdropout T=4, tta T=8" in warned[0]
    code, _, err = run_captured(capsys, "score", "--method", "tta", "--framework", "features", "--measure",
                                "entropy", "--cv", "2", "-o", "one.csv")
    assert code == 0 and "different sample counts" not in err


def test_score_shows_fits_and_epochs_with_eta(tmp_path, capsys, monkeypatch):
    write_chain(tmp_path, n=8, shape=(24, 24))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_captured(capsys, "score", "--framework", "seg-unc", "--measure", "entropy", "--cv", "2",
                                "--backbone", "test_resnet",
                                "--input-size", "32", "--epochs", "2", "--batch-size", "8", "--device", "cpu")
    assert code == 0, err
    assert "fitting 3 CNN quality model(s) of at most 2 epochs" in err
    lines = [x for x in err.splitlines() if x.startswith("uqseg score: fits:")]
    assert lines and all("ETA" in x for x in lines) and lines[-1].split()[3] == "6/6"
    assert any("fold 1/2" in x for x in err.splitlines()) and any("final model" in x for x in err.splitlines())
