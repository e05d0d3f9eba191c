"""Vote-level training pairs of the regression CNNs (``score --vote-level-pairs``): the levels against a brute-force
count over stored samples, their targets against scikit-learn, and the pairs kept out of validation and out of
each case's own out-of-fold prediction."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score

from tests.helpers import run_captured
from tests.quality.synth import write_chain
from uqseg_cli.io.store import StageFile
from uqseg_cli.quality import scoring
from uqseg_cli.quality.checkpoint import load_quality_model
from uqseg_cli.quality.crossfit import assign_folds
from uqseg_cli.quality.inputs import resample
from uqseg_cli.quality.level_pairs import LevelPairs, case_level_pairs, distinct_levels, vote_levels
from uqseg_cli.quality.training import FitConfig, fit_cnn, split_validation

from .test_cnn import META, _synthetic


def _votes(samples: np.ndarray, k: int) -> np.ndarray:
    return np.stack([(samples == c).sum(axis=0) for c in range(k)]).astype(np.uint16)


def test_vote_levels_equal_a_brute_force_count_over_the_samples() -> None:
    rng = np.random.default_rng(3)
    t, k = 5, 3
    samples = rng.choice(k, size=(t, 9, 11), p=[0.5, 0.3, 0.2])
    levels = vote_levels(_votes(samples, k))
    assert len(levels) == t
    for level, got in enumerate(levels, start=1):
        want = np.zeros((9, 11), dtype=np.uint8)
        for i in range(9):
            for j in range(11):
                labels = [int(s[i, j]) for s in samples]
                fg = [c for c in labels if c > 0]
                if len(fg) >= level:  # the foreground class most samples chose; ties: the lower class
                    counts = Counter(fg)
                    want[i, j] = min(c for c in counts if counts[c] == max(counts.values()))
        np.testing.assert_array_equal(got, want)
    # level 1 is the union of the samples' foreground, level T their intersection
    np.testing.assert_array_equal(levels[0] > 0, (samples > 0).any(axis=0))
    np.testing.assert_array_equal(levels[-1] > 0, (samples > 0).all(axis=0))


def test_distinct_levels_drop_repeats_and_the_scored_segmentation() -> None:
    a = np.zeros((4, 4), dtype=np.uint8)
    a[1:3, 1:3] = 1
    b = a.copy()
    b[0, 0] = 1
    samples = np.stack([b, a, a, a])  # levels: b (k=1), a (k=2..4)
    assert [lv.sum() for lv in distinct_levels(_votes(samples, 2), np.zeros_like(a))] == [5, 4]
    got = distinct_levels(_votes(samples, 2), a)  # a is the scored segmentation: only b is left
    assert len(got) == 1 and np.array_equal(got[0], b)
    with pytest.raises(ValueError, match="differ in shape"):
        distinct_levels(_votes(samples, 2), np.zeros((3, 3)))


@pytest.fixture
def chain(tmp_path):
    cases = write_chain(tmp_path, n=14, shape=(24, 24), no_ref=("case12", "case13"), train_ids=("case00",),
                        votes=True)
    return tmp_path, cases


@pytest.mark.parametrize("target", ["dice", "iou"])
def test_case_pairs_are_the_levels_inputs_and_their_own_scores(chain, target) -> None:
    folder, cases = chain
    meta = dataclasses.replace(META, input_size=[16, 16], num_classes=2)
    c = cases["case03"]
    with StageFile(folder / "uncertainty.h5") as sf:
        seg, y = case_level_pairs(sf.case("case03"), meta, target)
        levels = distinct_levels(_votes(c["samples"], 2), c["segmentation"])
        assert len(levels) >= 2 and seg.shape == (len(levels), 1, 16, 16)
        score = f1_score if target == "dice" else jaccard_score
        want = [score(c["reference"].ravel(), lv.ravel()) for lv in levels]
        np.testing.assert_allclose(y, want, rtol=1e-12)
        # the seg channel is the level's mask resampled the way every input channel is
        for lv, s in zip(levels, seg, strict=True):
            torch.testing.assert_close(s, resample(torch.from_numpy((lv == 1).astype(np.float32))[None], [16, 16]))
        with pytest.raises(Exception, match="case12: no reference"):
            case_level_pairs(sf.case("case12"), meta, target)


def test_subset_renumbers_the_cases() -> None:
    p = LevelPairs(torch.arange(5.0).reshape(5, 1, 1, 1), np.arange(5.0), np.array([0, 0, 2, 3, 3]))
    s = p.subset(np.array([3, 2]))
    assert s.case.tolist() == [1, 0, 0] and s.target.tolist() == [2.0, 3.0, 4.0]
    assert len(p.subset(np.array([1]))) == 0


CFG = FitConfig(epochs=3, patience=3, batch_size=8, lr=3e-3, seed=0, val_fraction=0.25)


def _pairs(x: torch.Tensor, seed: int) -> LevelPairs:
    """Two pairs per case: the case's seg channel shifted by one voxel, with made-up targets."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    seg = torch.cat([torch.roll(x[:, :1], s, dims=2) for s in (1, -1)])
    return LevelPairs(seg, rng.uniform(0.3, 0.9, 2 * n), np.tile(np.arange(n), 2))


def _fit(x, y, pairs):
    model, meta = fit_cnn(x, y, META, CFG, pairs=pairs)
    return torch.cat([v.flatten().float() for v in model.state_dict().values()]), meta


def test_pairs_train_the_model_but_never_reach_validation() -> None:
    torch.set_num_threads(1)
    x, y = _synthetic(24, seed=5)
    pairs = _pairs(x, 0)
    base, meta = _fit(x, y, pairs)
    tr, va = split_validation(24, CFG.val_fraction, CFG.seed)
    assert meta.training["vote_level_pairs"] == 2 * len(tr)
    assert meta.training["n_train"] == len(tr) and meta.training["n_val"] == len(va)
    # new targets for the validation cases' pairs: the same model, bit for bit
    t = pairs.target.copy()
    t[np.isin(pairs.case, va)] = 0.0
    same, _ = _fit(x, y, LevelPairs(pairs.seg, t, pairs.case))
    torch.testing.assert_close(same, base, rtol=0, atol=0)
    # new targets for the training cases' pairs: another model (the pairs are trained on)
    t = pairs.target.copy()
    t[np.isin(pairs.case, tr)] = 0.0
    other, _ = _fit(x, y, LevelPairs(pairs.seg, t, pairs.case))
    assert not torch.equal(other, base)
    # no pairs at all and an empty set of pairs give the plain fit
    plain, m = _fit(x, y, None)
    empty, _ = _fit(x, y, pairs.subset(np.zeros(0, dtype=np.int64)))
    torch.testing.assert_close(empty, plain, rtol=0, atol=0)
    assert "vote_level_pairs" not in m.training


def test_a_cases_out_of_fold_prediction_never_sees_its_own_pairs() -> None:
    torch.set_num_threads(1)
    n = 18
    x, y = _synthetic(n, seed=6)
    ids = [f"c{i:02d}" for i in range(n)]
    long = pd.DataFrame({"case": ids, "method": "tta", "measure": "entropy", "region": "foreground", "value": 0.0})
    batch = scoring.Batch(ids, y, np.zeros(n, bool), long, ["entropy"])
    batch.labelled = np.ones(n, bool)
    folds = assign_folds(n, 3, 0)
    cfg = FitConfig(epochs=2, patience=2, batch_size=8, lr=3e-3, seed=0)
    pairs = _pairs(x, 1)
    a = scoring.predict_cnn_framework(batch, x, META, folds, cfg, "cpu", pairs=pairs)
    t = pairs.target.copy()
    t[pairs.case == 4] = 0.0  # case 4's pairs change: only its own fold's model is untouched
    b = scoring.predict_cnn_framework(batch, x, META, folds, cfg, "cpu", pairs=LevelPairs(pairs.seg, t, pairs.case))
    own = folds == folds[4]
    np.testing.assert_array_equal(a.predicted[own], b.predicted[own])
    assert not np.array_equal(a.predicted[~own], b.predicted[~own])


def test_score_trains_on_vote_level_pairs_end_to_end(chain, monkeypatch, capsys) -> None:
    folder, cases = chain
    monkeypatch.chdir(folder)
    torch.set_num_threads(1)
    fast = ["--backbone", "test_resnet", "--input-size", "16", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]
    code, _, err = run_captured(capsys, "score", "--framework", "seg-unc", "--measure", "entropy", "--cv", "3",
                                "--vote-level-pairs", *fast)
    assert code == 0, err
    _, meta = load_quality_model(folder / "quality.pt")
    lab = [f"case{i:02d}" for i in range(1, 12)]  # with a reference, not seen by the segmenter
    assert meta.train_cases == lab
    tr, _ = split_validation(len(lab), 0.2, meta.training["seed"])
    want = sum(len(distinct_levels(_votes(cases[lab[i]]["samples"], 2), cases[lab[i]]["segmentation"]))
               for i in tr)
    assert want > 0 and meta.training["vote_level_pairs"] == want
    # hybrid reads the scored segmentation's features: the flag does not apply, and says so
    code, _, err = run_captured(capsys, "score", "--framework", "hybrid", "--measure", "entropy", "--cv", "0",
                                "--vote-level-pairs", "--overwrite", *fast)
    assert code == 0, err
    assert "--vote-level-pairs" in err


def test_a_file_without_vote_counts_is_refused_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    write_chain(tmp_path, n=8, shape=(16, 16))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_captured(capsys, "score", "--framework", "seg-unc", "--measure", "entropy", "--cv", "0",
                                "--vote-level-pairs", "--backbone", "test_resnet", "--input-size", "16",
                                "--epochs", "1", "--device", "cpu")
    assert code == 2
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1 and "case00: no tta/votes for --vote-level-pairs" in lines[0], err
    assert "Traceback" not in err
