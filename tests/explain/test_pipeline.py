"""Pipeline helpers: case selection, scores parsing, true quality, reliability pooling (vs evaluate's pooling)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from uqseg_cli.errors import InputError
from uqseg_cli.explain.pipeline import read_scores, reliability_groups, safe_name, select_cases, true_quality
from uqseg_cli.explain.plots import merge_degenerate_bins
from uqseg_cli.io.store import StageFile
from uqseg_cli.metrics.evaluation import pooled_calibration

from .synth import write_bins, write_uncertainty


def test_select_cases():
    pred = {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.5, "e": float("nan")}
    assert select_cases(pred, None, None) == ["a", "b", "c", "d", "e"]
    assert select_cases(pred, 2, None) == ["b", "c"]  # tie 0.5: c before d
    assert select_cases(pred, None, 1) == ["a"]
    assert select_cases(pred, 1, 1) == ["a", "b"]
    assert select_cases(pred, 10, None) == ["a", "b", "c", "d"]  # nan never selected
    assert select_cases(pred, 0, 0) == []


def test_safe_name():
    assert safe_name("IMD002") == "IMD002"
    assert safe_name("a/b c") == "a~2Fb~20c"


def test_safe_name_is_injective():
    """Issue 12 item 12: "IMD 013" and "IMD_013" wrote the same figure file."""
    ids = ["IMD 013", "IMD_013", "IMD~20013", "a.b", ".a", "~", "é", "e\u0301", "x/y", "x_y", ""]
    names = [safe_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all("/" not in n and not n.startswith(".") and n for n in names)


def test_read_scores(tmp_path):
    p = tmp_path / "scores.csv"
    pd.DataFrame({"case_id": ["x", "y"], "predicted": [0.5, 0.7], "dice": [0.4, 0.8]}).to_csv(p, index=False)
    s = read_scores(p)
    assert list(s["case"]) == ["x", "y"]
    assert s.loc["y", "predicted"] == 0.7 and s.loc["x", "true"] == 0.4
    pd.DataFrame(
        {"case": ["x", "x"], "method": ["tta", "mcdropout"], "predicted_dice": [0.5, 0.6]}
    ).to_csv(p, index=False)
    with pytest.raises(InputError, match="several rows for case 'x'"):
        read_scores(p)
    s = read_scores(p, method="mcdropout")
    assert s.loc["x", "predicted"] == 0.6 and math.isnan(s.loc["x", "true"])
    s = read_scores(p, prefer={"method": "tta", "framework": "cnn"})  # preferences apply where they match
    assert s.loc["x", "predicted"] == 0.5
    with pytest.raises(InputError, match="several rows"):
        read_scores(p, prefer={"method": "ensemble"})
    with pytest.raises(InputError, match="no rows with method = 'ensemble'"):
        read_scores(p, method="ensemble")
    pd.DataFrame({"case": ["x"], "foo": [1]}).to_csv(p, index=False)
    with pytest.raises(InputError, match="prediction column"):
        read_scores(p)


def test_true_quality_matches_brute_force_dice(tmp_path):
    truth = write_uncertainty(tmp_path / "u.h5", n=4)
    with StageFile(tmp_path / "u.h5") as sf:
        for cid in sf.case_ids:
            v = sf.case(cid)
            seg, ref = v.get("segmentation").ravel(), v.get("reference").ravel()
            ref_dice = 2 * sum(int(a and b) for a, b in zip(seg, ref, strict=True)) / (seg.sum() + ref.sum())
            assert true_quality(v) == pytest.approx(ref_dice, rel=1e-12)
            assert true_quality(v) == pytest.approx(truth[cid], rel=1e-12)
            inter = np.count_nonzero(seg & ref)
            assert true_quality(v, "iou") == pytest.approx(inter / np.count_nonzero(seg | ref), rel=1e-12)


def test_reliability_groups_match_evaluate_pooling(tmp_path):
    bins = write_bins(tmp_path / "b.csv", n_cases=3, raters=2)
    groups = reliability_groups(bins)
    assert len(groups) == 1
    g = groups[0]
    oracle = pooled_calibration(bins)
    ece = oracle[(oracle["method"] == "tta") & (oracle["metric"] == "ece")]["pooled"].iloc[0]
    assert g["ece"] == pytest.approx(ece, rel=1e-12)
    assert g["n_cases"] == 3 and g["n_raters"] == 2
    assert g["count"].sum() == 3 * 2 * 300
    # the zero-width confidence == 1 bin is folded into the last real bin for drawing
    lo, up, n = merge_degenerate_bins(g["lower"], g["upper"], g["count"])
    assert len(lo) == 10 and up[-1] == 1.0 and n.sum() == g["count"].sum() and n[-1] == g["count"][-2:].sum()
    with pytest.raises(InputError, match="missing column"):
        reliability_groups(bins.drop(columns="rater"))
