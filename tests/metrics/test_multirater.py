"""Consensus / dissensus, consensus Dice, CURVAS confidence, crop and row-wise Dice on hand-made masks; the whole
per-case evaluation on synthetic data and on the QUBIQ kidney raters (read through the spine's readers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared
from uqseg_cli.metrics import calibration as cal
from uqseg_cli.metrics.crps import crps_curvas, crps_gaussian
from uqseg_cli.metrics.evaluation import CaseInput, EvalOptions, evaluate_case, pooled_calibration, summarize
from uqseg_cli.metrics.multirater import (
    challenge_confidence,
    consensus,
    consensus_dice,
    curvas2024_rowwise_dice,
    curvas_crop_box,
    majority_vote,
    rater_fraction,
    rater_volumes,
    voxel_volume_ml,
)


def _three_raters():
    # 1D "image" of 8 voxels: raters agree on voxels 2-4, disagree on 1 and 5, and 6 is marked by one rater only
    r = np.zeros((3, 8), np.uint8)
    r[0, 1:6] = 1
    r[1, 2:5] = 1
    r[2, 2:7] = 1
    return r


def test_consensus_regions_by_hand():
    c = consensus(_three_raters(), 1)
    assert np.flatnonzero(c.foreground).tolist() == [2, 3, 4]
    assert np.flatnonzero(c.dissensus).tolist() == [1, 5, 6]
    assert np.flatnonzero(c.background).tolist() == [0, 7]
    assert c.dissensus_fraction() == pytest.approx(3 / 6)
    # the regions partition the image
    assert (c.foreground.astype(int) + c.background + c.dissensus == 1).all()


def test_consensus_dice_removes_dissensus_from_both():
    cons = consensus(_three_raters(), 1)
    seg = np.zeros(8, bool)
    seg[[1, 2, 3, 6]] = True  # voxels 1 and 6 are in dissensus: they count for nothing
    # after removal: prediction {2, 3}, consensus {2, 3, 4} -> 2*2/(2+3)
    assert consensus_dice(seg, cons) == pytest.approx(0.8)
    seg_fp = seg.copy()
    seg_fp[0] = True  # a false positive in consensus background does count
    assert consensus_dice(seg_fp, cons) == pytest.approx(2 * 2 / (3 + 3))


def test_majority_and_mean_rater():
    r = _three_raters()
    assert np.flatnonzero(majority_vote(r, 1)).tolist() == [2, 3, 4, 5]
    np.testing.assert_allclose(rater_fraction(r, 1), [0, 1 / 3, 1, 1, 1, 2 / 3, 1 / 3, 0])
    two = np.array([[1, 1, 0], [1, 0, 0]])
    assert majority_vote(two, 1).tolist() == [True, False, False]  # a 1-1 tie is not a majority


def test_challenge_confidence_by_hand():
    cons = consensus(_three_raters(), 1)
    p = np.array([0.2, 0.5, 0.9, 0.8, 0.7, 0.5, 0.5, 0.0])
    # mean over consensus fg {2,3,4} = 0.8; over consensus bg {0,7} = 0.1 -> ((1-0.1)+0.8)/2
    assert challenge_confidence(p, cons) == pytest.approx(0.85)
    # no consensus foreground: undefined
    assert np.isnan(challenge_confidence(p, consensus(np.zeros((3, 8), np.uint8), 1)))


def test_absent_class_is_handled():
    # class 2 exists for rater 0 only; class 3 for nobody -- the challenge code indexes np.unique counts here
    r = np.zeros((3, 6), np.uint8)
    r[0, :2] = 2
    vols = rater_volumes(r, 2, 0.5)
    assert vols.tolist() == [1.0, 0.0, 0.0]
    assert rater_volumes(r, 3, 0.5).tolist() == [0.0, 0.0, 0.0]
    c3 = consensus(r, 3)
    assert c3.dissensus_fraction() == 0.0 and not c3.foreground.any()
    assert consensus_dice(np.zeros(6, bool), c3) == 1.0  # both empty
    assert consensus_dice(np.ones(6, bool), c3) == 0.0


def test_voxel_volume_ml():
    assert voxel_volume_ml((2.0, 0.5, 0.5)) == pytest.approx(0.0005)
    assert voxel_volume_ml((1.0, 1.0)) == pytest.approx(0.001)
    with pytest.raises(ValueError):
        voxel_volume_ml((1.0, 0.0))


def test_curvas_crop_box_is_in_plane_over_slices():
    ct = np.full((1, 4, 10, 12), -1000.0)
    ct[0, 1, 2:5, 3:4] = 40.0
    ct[0, 3, 6, 8:10] = 10.0
    rows, cols = curvas_crop_box(ct)
    assert (rows, cols) == (slice(2, 7), slice(3, 10))
    assert curvas_crop_box(np.full((1, 5, 5), -5.0)) == (slice(0, 5), slice(0, 5))


def _monai_like_rowwise(pred, ref):
    """Brute-force loops over MONAI's (batch, channel, spatial) reading of a (slices, X, Y) volume."""
    per_slice = []
    for s in range(pred.shape[0]):
        vals = []
        for x in range(1, pred.shape[1]):  # include_background=False drops "channel" 0
            y_o = ref[s, x].sum()
            if y_o == 0:
                continue  # ignore_empty -> NaN -> skipped
            vals.append(2.0 * (pred[s, x] & ref[s, x]).sum() / (y_o + pred[s, x].sum()))
        if vals:
            per_slice.append(np.mean(vals))
    return float(np.mean(per_slice)) if per_slice else 0.0


def test_rowwise_dice_matches_monai_convention_and_differs_from_volumetric():
    rng = np.random.default_rng(1)
    ref = np.zeros((3, 12, 10), bool)
    ref[:, 3:9, 2:8] = True
    pred = ref.copy()
    pred[:, 3:5, 2:4] = False  # misses a corner
    pred[:, 0, :] = True  # false positives in row 0 (dropped as "background channel")
    pred[:, 10, :] = True  # ... and in rows with empty reference (ignored)
    pred |= rng.random(pred.shape) < 0.05
    got = curvas2024_rowwise_dice(pred, ref)
    assert got == pytest.approx(_monai_like_rowwise(pred, ref), abs=1e-12)
    from uqseg_cli.metrics.overlap import dice

    assert abs(got - dice(pred, ref)) > 0.05  # not the volumetric Dice the challenge describes
    assert curvas2024_rowwise_dice(pred, np.zeros_like(ref)) == 0.0


# ---------------------------------------------------------------- per-case evaluation


def _case(rng, shape=(6, 20, 20), k=3, r=3):
    logits = rng.normal(size=(k, *shape)) * 2
    logits[1, :, 4:12, 4:12] += 4
    logits[2, :, 13:18, 10:18] += 4
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    truth = np.argmax(logits + rng.normal(size=logits.shape), axis=0)
    raters = np.stack([np.where(rng.random(shape) < 0.9, truth, 0) for _ in range(r)]).astype(np.uint8)
    return p, raters


def test_evaluate_case_columns_agree_with_the_parts():
    rng = np.random.default_rng(5)
    p, raters = _case(rng)
    sv = rng.normal(1.0, 0.1, size=(8, 3))
    inp = CaseInput("c", "tta", p, raters, (2.0, 1.0, 1.0), image=np.ones((1, 6, 20, 20)), sample_volumes=sv)
    opts = EvalOptions(n_bins=10, crps_modes=("gaussian", "curvas", "ensemble"))
    rows, bins = evaluate_case(inp, ["bg", "a", "b"], opts)
    df = pd.DataFrame(rows).set_index("class")
    seg = p.argmax(0)
    cons = consensus(raters, 1)
    assert df.loc["a", "dice_consensus"] == pytest.approx(consensus_dice(seg == 1, cons))
    assert df.loc["a", "dissensus_fraction"] == pytest.approx(cons.dissensus_fraction())
    vols = rater_volumes(raters, 2, 0.002)
    v_pred = p[2].sum() * 0.002
    assert df.loc["b", "volume_pred_ml"] == pytest.approx(v_pred)
    assert df.loc["b", "crps_gaussian_ml"] == pytest.approx(crps_gaussian(v_pred, vols.mean(), vols.std()))
    assert df.loc["b", "crps_curvas_ml"] == pytest.approx(crps_curvas(v_pred, vols.mean(), vols.std()))
    eces = [cal.toplabel_bin_sums(p, raters[i], 10).ece() for i in range(3)]
    assert df.loc["all", "ece"] == pytest.approx(np.mean(eces))
    # bins: per rater, variant, class; pooled over this single case = the case value
    b = pd.DataFrame(bins)
    assert set(b["variant"]) == {"toplabel", "toplabel_fg", "class", "class_fg"}
    assert len(b[(b.variant == "toplabel") & (b.rater == 0)]) == 11
    pooled = pooled_calibration(b).set_index(["class", "metric"])["pooled"]
    assert pooled[("all", "ece")] == pytest.approx(df.loc["all", "ece"])
    assert pooled[("a", "ece_class")] == pytest.approx(df.loc["a", "ece_class"])
    assert pooled[("all", "ece_classwise")] == pytest.approx(df.loc["all", "ece_classwise"])


def test_pooled_ece_over_cases_equals_one_shot():
    rng = np.random.default_rng(9)
    cases = [_case(rng, shape=(2, 10 + i, 12)) for i in range(3)]
    rows, bins = [], []
    for i, (p, r) in enumerate(cases):
        rr, bb = evaluate_case(CaseInput(f"c{i}", "m", p, r, (1.0, 1.0, 1.0)), ["bg", "a", "b"], EvalOptions())
        rows += rr
        bins += bb
    pooled = pooled_calibration(pd.DataFrame(bins)).set_index(["class", "metric"])["pooled"]
    # one-shot: all voxels of all cases at once, per rater, then averaged over raters
    flat_p = np.concatenate([p.reshape(3, -1) for p, _ in cases], axis=1)
    want = np.mean(
        [cal.toplabel_bin_sums(flat_p, np.concatenate([r[i].ravel() for _, r in cases]), 15).ece() for i in range(3)]
    )
    assert pooled[("all", "ece")] == pytest.approx(want, abs=1e-12)
    summ = summarize(pd.DataFrame(rows), pd.DataFrame(bins))
    row = summ[(summ["class"] == "all") & (summ["metric"] == "ece")].iloc[0]
    assert row["n"] == 3 and row["pooled"] == pytest.approx(want)
    assert row["mean"] == pytest.approx(np.mean([x["ece"] for x in rows if x["class"] == "all"]))


def test_evaluate_case_class_absent_everywhere():
    rng = np.random.default_rng(2)
    p, raters = _case(rng, k=3)
    raters[raters == 2] = 0  # no rater marks class 2
    p[2] = 0.0  # nor does the model
    p /= p.sum(0)
    rows, _ = evaluate_case(CaseInput("c", "m", p, raters, (1.0, 1.0, 1.0)), ["bg", "a", "b"], EvalOptions())
    b = pd.DataFrame(rows).set_index("class").loc["b"]
    assert b["dice_consensus"] == 1.0 and b["dice_rater_mean"] == 1.0
    assert b["volume_rater_mean_ml"] == 0.0 and b["crps_gaussian_ml"] == 0.0
    assert np.isnan(b["confidence"])


def test_evaluate_case_refuses_bad_input():
    p = np.full((2, 4, 4), 0.5)
    with pytest.raises(ValueError, match="rater 2 has label 3"):
        r = np.zeros((2, 4, 4), np.uint8)
        r[1, 0, 0] = 3
        evaluate_case(CaseInput("c", "m", p, r, (1.0, 1.0)), ["bg", "fg"], EvalOptions())
    with pytest.raises(ValueError, match="raters have shape"):
        evaluate_case(CaseInput("c", "m", p, np.zeros((2, 4, 5), np.uint8), (1.0, 1.0)), ["bg", "fg"], EvalOptions())
    with pytest.raises(ValueError, match="ensemble CRPS needs"):
        evaluate_case(
            CaseInput("c", "m", p, np.zeros((2, 4, 4), np.uint8), (1.0, 1.0)),
            ["bg", "fg"],
            EvalOptions(crps_modes=("ensemble",)),
        )


def test_curvas2024_protocol_crops_and_rebuilds_background():
    rng = np.random.default_rng(4)
    p, raters = _case(rng, shape=(3, 20, 20))
    image = np.full((1, 3, 20, 20), -1000.0)
    image[0, :, 2:18, 3:19] = 50.0
    opts = EvalOptions(n_bins=50, crps_modes=("curvas",), protocol="curvas2024")
    rows, _ = evaluate_case(CaseInput("c", "m", p, raters, (1.0, 1.0, 1.0), image=image), ["bg", "a", "b"], opts)
    df = pd.DataFrame(rows).set_index("class")
    pc = p[:, :, 2:18, 3:19]
    pc = np.concatenate([np.clip(1 - pc[1:].sum(0), 0, 1)[None], pc[1:]])
    rc = raters[:, :, 2:18, 3:19]
    want = np.mean([cal.toplabel_bin_sums(pc, rc[i], 50).ece() for i in range(3)])
    assert df.loc["all", "ece"] == pytest.approx(want)
    assert df.loc["a", "volume_pred_ml"] == pytest.approx(pc[1].sum() * 0.001)
    with pytest.raises(ValueError, match="needs the image"):
        evaluate_case(CaseInput("c", "m", p, raters, (1.0, 1.0, 1.0)), ["bg", "a", "b"], opts)


def test_qubiq_raters_dissensus_in_documented_range():
    """QUBIQ kidney raters through the spine's readers (predict --raters is exercised in tests/cli)."""
    from uqseg_cli.io.cases import discover_cases, load_case

    root = shared("qubiq_kidney")
    specs = discover_cases(root, raters=[f"task01_seg0{i}.nii.gz" for i in (1, 2, 3)])
    assert len(specs) == 14
    ratios = []
    for spec in specs:
        case = load_case(spec)
        assert case.raters.shape == (3, *case.image.shape[1:])
        # a synthetic, slightly blurred probability map around the mean rater mask
        frac = rater_fraction(case.raters, 1)[None]
        p = np.concatenate([1 - frac * 0.9, frac * 0.9])
        rows, _ = evaluate_case(CaseInput(case.id, "synthetic", p, case.raters, case.spacing), ["bg", "kidney"],
                                EvalOptions())
        k = rows[0]
        ratios.append(k["consensus_ratio"])
        assert k["dissensus_fraction"] == pytest.approx(1 - k["consensus_ratio"])
        assert 0.0 < k["volume_rater_std_ml"] and k["crps_gaussian_ml"] >= 0.0
    # data README: all-agree over any-rater region is 0.77 to 0.91 per case
    assert 0.76 <= min(ratios) <= 0.78 and 0.90 <= max(ratios) <= 0.92
