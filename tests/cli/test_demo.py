"""`uqseg demo --quick`: the whole pipeline through the real commands on built-in data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from uqseg_cli.errors import UqsegError
from uqseg_cli.explain.report import missing_references
from uqseg_cli.io.store import StageFile

REPO = Path(__file__).resolve().parents[2]


def test_demo_quick_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    r = subprocess.run(
        [sys.executable, "-m", "uqseg_cli", "demo", "--quick", "-o", str(out), "--json", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 10
    with StageFile(out / "uncertainty.h5", expect_stage="uncertainty") as sf:
        assert [x.stage for x in sf.lineage()] == ["uncertainty", "sample", "predict"]
        assert len(sf.case_ids) == 10
        assert sorted(sf.case(sf.case_ids[0]).keys()) == ["ensemble", "mcdropout", "tta"]
    # the true Dice in scores.csv is the Dice of predict.h5's segmentation against its reference
    scores = pd.read_csv(out / "scores.csv")
    with StageFile(out / "predict.h5") as sf:
        first = sf.case_ids[0]
        c = sf.case(first)
        seg, ref = c.get("segmentation") > 0, c.get("reference") > 0
        dice = 2 * (seg & ref).sum() / (seg.sum() + ref.sum())
    got = scores[scores["case"] == first]["true_dice"].iloc[0]
    assert math.isclose(got, dice, rel_tol=1e-9)
    assert {q["framework"] for q in summary["quality"]} >= {"features-linear", "baseline", "seg-unc"}
    # the headline is an honest model (beats the best single feature and the mean) or none at all
    honest = [q for q in summary["quality"] if q["beats_baseline"] and q["r2"] > 0]
    if honest:
        best = max(honest, key=lambda q: q["r2"])
        assert summary["headline"]["framework"] == best["framework"] and summary["headline"]["r2"] == best["r2"]
    else:
        assert summary["headline"] is None
    for q in summary["quality"]:
        assert q["beats_baseline"] is None if q["framework"] == "baseline" else isinstance(q["beats_baseline"], bool)
    for method, v in summary["calibration"].items():
        assert method in {"ensemble", "mcdropout", "tta"} and 0 <= v["ece"] <= 1
    report = out / "explain" / "report.html"
    assert report.exists() and missing_references(report) == []
    # the second run refuses to overwrite the folder
    r = subprocess.run(
        [sys.executable, "-m", "uqseg_cli", "demo", "--quick", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "exists and is not empty" in r.stderr


def test_pipeline_steps_are_the_commands_a_user_types(tmp_path):
    from uqseg_cli.cli.demo_run import DemoConfig, pipeline_steps, prepare_folder

    cfg = DemoConfig.of(quick=True, epochs=3)
    assert (cfg.cases, cfg.epochs, cfg.samples) == (16, 3, 3) and DemoConfig.of() == DemoConfig()
    steps = pipeline_steps(Path("/d"), cfg, "cpu", quiet=True)
    assert [argv[0] for _, argv in steps] == ["train", "predict", "sample", "uncertainty", "aggregate", "score",
                                              "score", "evaluate", "explain"]
    assert steps[0][1] == ["train", "-i", "/d/data/train.csv", "-m", "unet-small", "-o", "/d/seg.pt", "--members",
                           "2", "--epochs", "3", "--input-size", "64x96", "--lr", "3e-3", "--val-fraction", "0.2",
                           "--seed", "0", "--device", "cpu", "-q"]
    assert steps[3][1] == ["uncertainty", "-i", "/d/samples.h5", "-o", "/d/uncertainty.h5", "-q"]
    assert steps[6][1][3:5] == ["--framework", "seg-unc"] and steps[6][1][-3:] == ["--device", "cpu", "-q"]
    assert all("-q" not in argv for _, argv in pipeline_steps(Path("/d"), cfg, "auto", quiet=False))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    prepare_folder(tmp_path / "empty", overwrite=False)  # absent: fine
    with pytest.raises(UqsegError, match="exists and is not empty; pass --overwrite"):
        prepare_folder(tmp_path / "x", overwrite=False)
    prepare_folder(tmp_path / "x", overwrite=True)
    assert not (tmp_path / "x").exists()
