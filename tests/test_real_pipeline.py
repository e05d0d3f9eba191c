"""End to end on the shared real data through the real command line: QUBIQ kidney with three raters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import shared
from uqseg_cli.io.cases import discover_cases, load_case
from uqseg_cli.io.store import StageFile

REPO = Path(__file__).resolve().parents[1]
RATERS = "task01_seg01.nii.gz,task01_seg02.nii.gz,task01_seg03.nii.gz"


def uqseg(cwd: Path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    r = subprocess.run(
        [sys.executable, "-m", "uqseg_cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, f"uqseg {' '.join(args)} failed:\n{r.stderr}"


def test_qubiq_predict_raters_evaluate(tmp_path):
    data = shared("qubiq_kidney")
    uqseg(
        tmp_path,
        "train",
        "-i",
        str(data),
        "--masks",
        "task01_seg01.nii.gz",
        "-m",
        "unet-small",
        "--epochs",
        "1",
        "--input-size",
        "64x64",
        "--val-fraction",
        "0",
        "-o",
        "seg.pt",
        "-q",
    )
    uqseg(tmp_path, "predict", "-i", str(data), "-m", "seg.pt", "--raters", RATERS, "-q")
    with StageFile(tmp_path / "predict.h5") as sf:
        assert len(sf.case_ids) == 14
        c = sf.case("case01")
        assert c.get("raters").shape == (3, 497, 497) and c.get("probabilities").shape[1:] == (497, 497)
    uqseg(tmp_path, "evaluate", "-i", "predict.h5", "-q")
    m = pd.read_csv(tmp_path / "metrics.csv")
    fg = m[m["class"] != "all"].set_index("case")
    assert len(fg) == 14
    # the data README: all-agree over any-rater region is 0.77 to 0.91 per case
    assert fg["consensus_ratio"].between(0.76, 0.92).all()
    for spec in discover_cases(data, raters=[RATERS])[:3]:  # independent recomputation from the NIfTI files
        r = load_case(spec).raters.astype(bool)
        ratio = r.all(0).sum() / r.any(0).sum()
        assert np.isclose(fg.loc[spec.id, "consensus_ratio"], ratio)
        assert np.isclose(fg.loc[spec.id, "dissensus_voxels"], (r.any(0) & ~r.all(0)).sum())
    assert fg["dice_consensus"].between(0, 1).all()
    assert (fg["volume_rater_std_ml"] > 0).all()
