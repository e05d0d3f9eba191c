"""`uqseg score` end to end on synthetic stage files: default names, honest cross-fitting, saved models."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import run_captured
from tests.quality.synth import write_chain
from uqseg_cli.io.store import StageFile
from uqseg_cli.metrics.regression import regression_summary
from uqseg_cli.quality.checkpoint import load_quality_model
from uqseg_cli.quality.inputs import build_inputs

FAST = ["--backbone", "test_resnet", "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `uqseg ARGS` through the console entry point; returns (exit code, stdout, stderr)."""
    return run_captured(capsys, *args)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread avoids OpenMP contention on a shared machine
    write_chain(tmp_path, n=14, shape=(24, 24), no_ref=("case12", "case13"), train_ids=("case00",))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    torch.set_num_threads(threads)


def test_one_liner_with_default_names(folder, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "score", "--method", "tta", "--measure", "entropy", "--cv", "3",
                       "--framework", "seg-unc", *FAST)
    assert code == 0, err
    df = pd.read_csv(folder / "scores.csv")
    assert list(df.columns) == ["case", "method", "measure", "framework", "predicted_dice", "true_dice",
                                "abs_error", "split", "train_case"]
    cnn = df[df.framework == "seg-unc"].set_index("case")
    assert len(cnn) == 14
    # labelled = with reference and not seen by the segmenter: out-of-fold; the rest: predicted by the final model
    assert (cnn.loc[[f"case{i:02d}" for i in range(1, 12)], "split"] == "oof").all()
    assert (cnn.loc[["case00", "case12", "case13"], "split"] == "test").all()
    assert cnn.loc[["case12", "case13"], "true_dice"].isna().all()
    assert "training set" in err and "case(s) with a reference were in the segmenter's" in err
    assert (folder / "quality.pt").exists()
    # the baseline is always reported next to the regressor
    summ = pd.read_csv(folder / "scores.summary.csv")
    assert summ.framework.tolist() == ["seg-unc", "baseline"]
    assert summ.detail[1].startswith("entropy/")
    # summary = regression metrics of the honest rows (oof, not train cases)
    for fw, row in summ.set_index("framework").iterrows():
        h = df[(df.framework == fw) & (df.split == "oof") & ~df.train_case]
        s = regression_summary(h.true_dice, h.predicted_dice)
        assert row.n == s["n"] == 11
        for k in ("r2", "pearson", "spearman", "mae", "aurc"):
            assert row[k] == pytest.approx(s[k], abs=1e-9)


def test_cross_fitted_predictions_never_see_their_own_label(folder, monkeypatch, capsys):
    args = ["score", "--method", "tta", "--measure", "entropy", "--framework", "seg-unc,features", "--cv", "3",
            "-o", "a.csv", "--save-model", "qa.pt", *FAST]
    assert run(monkeypatch, capsys, *args)[0] == 0
    # give case05 a completely different reference (so a different Dice), nothing else changes
    with h5py.File(folder / "predict.h5", "a") as f:
        ref = f["cases/case05/reference"][()]
        f["cases/case05/reference"][...] = 1 - ref
    args[args.index("a.csv")] = "b.csv"
    args[args.index("qa.pt")] = "qb.pt"
    assert run(monkeypatch, capsys, *args)[0] == 0
    a = pd.read_csv(folder / "a.csv").set_index(["framework", "case"])
    b = pd.read_csv(folder / "b.csv").set_index(["framework", "case"])
    assert a.loc[("seg-unc", "case05"), "true_dice"] != b.loc[("seg-unc", "case05"), "true_dice"]
    for fw in ("seg-unc", "features-linear", "features-forest", "baseline"):
        assert a.loc[(fw, "case05"), "predicted_dice"] == b.loc[(fw, "case05"), "predicted_dice"], fw
        # ... whereas other folds and the final model did see the changed label
        assert not np.allclose(a.loc[fw, "predicted_dice"], b.loc[fw, "predicted_dice"]), fw


def test_fold_ensemble_is_saved_described_and_checked_when_loaded(folder, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "score", "--method", "tta", "--measure", "entropy", "--cv", "3",
                       "--framework", "seg-unc", "-o", "e.csv", "--save-model", "qe.pt", "--fold-ensemble", *FAST)
    assert code == 0, err
    fit = pd.read_csv(folder / "e.csv").query("split == 'test' and framework == 'seg-unc'").set_index("case")
    code, out, err = run(monkeypatch, capsys, "info", "qe.pt", "--json")
    assert code == 0, err
    assert "mean of the final model and 3 fold models" in json.loads(out)["architecture"]
    code, out, err = run(monkeypatch, capsys, "info", "qe.pt")
    assert code == 0 and "training:      " in out and "fold 2:        " in out and "fold 3:" not in out
    code, _, err = run(monkeypatch, capsys, "score", "--model", "qe.pt", "-o", "e2.csv")
    assert code == 0, err
    again = pd.read_csv(folder / "e2.csv").query("framework == 'seg-unc'").set_index("case")
    np.testing.assert_allclose(again.loc[fit.index, "predicted_dice"], fit.predicted_dice, rtol=0, atol=1e-6)
    # the default: the final model alone, a file without fold models
    code, _, err = run(monkeypatch, capsys, "score", "--method", "tta", "--measure", "entropy", "--cv", "3",
                       "--framework", "seg-unc", "-o", "f.csv", "--save-model", "qf.pt", *FAST)
    assert code == 0, err
    single = torch.load(folder / "qf.pt", weights_only=True)
    assert "fold_models" not in single["meta"] and not any(k.startswith("fold") for k in single["state_dict"])
    # a file whose meta and weights disagree: one line, exit 2, no traceback
    obj = torch.load(folder / "qe.pt", weights_only=True)
    obj["meta"]["fold_models"] = 2
    torch.save(obj, folder / "bad.pt")
    code, _, err = run(monkeypatch, capsys, "score", "--model", "bad.pt", "-o", "b.csv")
    assert code == 2 and "bad.pt: weights do not match the model described in it: 3 fold model(s) stored" in err
    assert "Traceback" not in err


def test_model_predicts_new_batch_as_explain_sees_it(folder, monkeypatch, capsys, tmp_path_factory):
    code, _, err = run(monkeypatch, capsys, "score", "--measure", "combined", "--framework", "img-seg-unc",
                       "--cv", "0", *FAST)
    assert code == 0, err
    new = tmp_path_factory.mktemp("new")
    write_chain(new, n=5, shape=(24, 24), seed=3, prefix="new")
    code, out, err = run(monkeypatch, capsys, "score", "-i", str(new / "uncertainty.h5"), "--model", "quality.pt",
                         "-o", str(new / "s.csv"), "--json", "--device", "cpu")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n_cases"] == 5 and doc["models"] == []
    df = pd.read_csv(new / "s.csv")
    cnn = df[df.framework == "img-seg-unc"].set_index("case")
    assert (cnn.split == "test").all() and (cnn.measure == "combined").all()
    # the explain interface: load_quality_model + build_inputs reproduce the scores exactly
    model, meta = load_quality_model(folder / "quality.pt")
    assert meta.channels[:3] == ["image:0", "image:1", "image:2"] and len(meta.channels) == 3 + 1 + 5
    with StageFile(new / "uncertainty.h5") as sf, torch.no_grad():
        x = torch.stack([build_inputs(sf.case(c), meta) for c in cnn.index])
        np.testing.assert_allclose(model(x).double().numpy(), cnn.predicted_dice.to_numpy(), atol=1e-6)
    # a model for another measure is refused with one line
    code, _, err = run(monkeypatch, capsys, "score", "--model", "quality.pt", "--measure", "entropy", "-o", "x.csv")
    assert code == 2 and "was fitted for --measure combined" in err


def test_iou_target_and_features_only_stdout(folder, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "score", "--framework", "features", "--target", "iou", "--cv", "4",
                         "-o", "-", "--include-train-cases", "--failure-threshold", "0.8")
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert "predicted_iou" in df.columns and "true_iou" in df.columns
    lab = df[(df.framework == "features-linear") & df.true_iou.notna()]
    assert (lab.split == "oof").all() and len(lab) == 12  # the train case is included on request


def test_errors(folder, monkeypatch, capsys, tmp_path_factory):
    code, _, err = run(monkeypatch, capsys, "score", "--cv", "20", *FAST)
    assert code == 2 and "--cv 20: only 11 labelled case(s)" in err
    code, _, err = run(monkeypatch, capsys, "score", "--framework", "cnn")
    assert code == 2 and "--framework cnn: choose from" in err
    code, _, err = run(monkeypatch, capsys, "score", "--measure", "variance")
    assert code == 2 and "--measure variance: not in uncertainty.h5" in err
    noref = tmp_path_factory.mktemp("noref")
    write_chain(noref, n=3, shape=(16, 16), no_ref=("case00", "case01", "case02"))
    code, _, err = run(monkeypatch, capsys, "score", "-i", str(noref / "uncertainty.h5"), "-o", "n.csv")
    assert code == 2 and "0 case(s) with a usable reference" in err and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "score", "--model", "missing.pt", "-o", "m.csv")
    assert code == 2 and "missing.pt: quality model not found" in err


def test_volumes_use_the_3d_cnn(tmp_path, monkeypatch, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_chain(tmp_path, n=8, shape=(12, 14, 10))
        monkeypatch.chdir(tmp_path)
        code, _, err = run(monkeypatch, capsys, "score", "--measure", "entropy", "--cv", "2", "--input-size", "16",
                           "--framework", "seg-unc",
                           "--epochs", "1", "--batch-size", "4", "--device", "cpu")
        assert code == 0, err
        model, meta = load_quality_model(tmp_path / "quality.pt")
        assert meta.dims == 3 and meta.input_size == [16, 16, 16] and meta.backbone == "smallcnn3d"
        with StageFile(tmp_path / "uncertainty.h5") as sf:
            assert build_inputs(sf.case("case03"), meta).shape == (2, 16, 16, 16)
        assert len(pd.read_csv(tmp_path / "scores.csv").query("framework == 'seg-unc'")) == 8
    finally:
        torch.set_num_threads(threads)


def test_features_table_from_aggregate_gives_the_same_scores(folder, monkeypatch, capsys):
    assert run(monkeypatch, capsys, "aggregate", "-q")[0] == 0
    common = ["score", "--framework", "features", "--measure", "epkl", "--cv", "3", "-q"]
    assert run(monkeypatch, capsys, *common, "-o", "a.csv", "--save-model", "a.pt")[0] == 0
    given = ["--features", "features.csv", "-o", "b.csv", "--save-model", "b.pt"]
    assert run(monkeypatch, capsys, *common, *given)[0] == 0
    a, b = pd.read_csv(folder / "a.csv"), pd.read_csv(folder / "b.csv")
    np.testing.assert_allclose(a.predicted_dice, b.predicted_dice, atol=1e-12)


def test_features_model_keeps_its_combined_scale_on_a_new_batch(folder, monkeypatch, capsys, tmp_path_factory):
    code, _, err = run(monkeypatch, capsys, "score", "--framework", "features", "--measure", "combined", "--cv", "0",
                       "-o", "fit.csv", "--save-model", "qf.pt")
    assert code == 0, err
    # a new batch holding the first five cases only: its own z-scores would differ from the fitted batch's
    sub = tmp_path_factory.mktemp("sub")
    write_chain(sub, n=5, shape=(24, 24), no_ref=("case12", "case13"), train_ids=("case00",))
    code, _, err = run(monkeypatch, capsys, "score", "-i", str(sub / "uncertainty.h5"), "--model", "qf.pt",
                       "-o", str(sub / "s.csv"))
    assert code == 0, err
    fit = pd.read_csv(folder / "fit.csv").set_index(["framework", "case"])
    new = pd.read_csv(sub / "s.csv")
    new = new[new.framework != "baseline"].set_index(["framework", "case"])
    assert len(new) == 15  # 5 cases x linear, forest, boost
    for key, row in new.iterrows():
        assert row.predicted_dice == pytest.approx(fit.loc[key, "predicted_dice"], abs=1e-12), key


def test_joint_method_uses_every_methods_features(tmp_path, monkeypatch, capsys):
    from uqseg_cli.quality.checkpoint import read_quality_checkpoint

    folder = tmp_path
    write_chain(folder, n=14, shape=(24, 24), no_ref=("case12", "case13"), methods=("tta", "mcdropout"))
    monkeypatch.chdir(folder)
    code, _, err = run(monkeypatch, capsys, "score", "--method", "joint", "--framework", "features", "--measure",
                       "entropy", "--cv", "3", "-o", "joint.csv", "--save-model", "qj.pt")
    assert code == 0, err
    summ = pd.read_csv(folder / "joint.summary.csv")
    assert set(summ.method) == {"joint"} and "beats_baseline" in summ.columns
    meta = read_quality_checkpoint(folder / "qj.pt")["meta"]
    methods = sorted({f.partition(":")[0] for f in meta.features})
    assert len(methods) >= 2 and all(":" in f for f in meta.features)
    # the joint model applied unchanged to the same cases reproduces the final model's test predictions
    code, _, err = run(monkeypatch, capsys, "score", "--model", "qj.pt", "-o", "again.csv")
    assert code == 0, err
    fit = pd.read_csv(folder / "joint.csv").query("split == 'test'").set_index(["framework", "case"])
    again = pd.read_csv(folder / "again.csv").set_index(["framework", "case"])
    for key, row in fit.iterrows():
        assert again.loc[key, "predicted_dice"] == pytest.approx(row.predicted_dice, abs=1e-12)
    code, _, err = run(monkeypatch, capsys, "score", "--method", "joint", "--framework", "seg-unc")
    assert code == 2 and "--framework features only" in err


def test_default_one_liner_fits_the_features_regressors(folder, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "score", "--method", "tta", "--measure", "entropy")
    assert code == 0, err
    summ = pd.read_csv(folder / "scores.summary.csv")
    assert summ.framework.tolist() == ["features-linear", "features-forest", "features-boost", "baseline"]
    assert summ.beats_baseline.isna().tolist() == [False, False, False, True]  # blank for the baseline
    assert "CNN regressor" not in err  # no CNN asked: no advice about labelled cases


def test_hybrid_joins_the_features_to_the_cnn_and_predicts_the_same_when_loaded(folder, monkeypatch, capsys):
    from uqseg_cli.quality.checkpoint import load_quality_model

    code, _, err = run(monkeypatch, capsys, "score", "--framework", "hybrid", "--method", "tta", "--measure",
                       "entropy", "--cv", "3", "-o", "h.csv", "--save-model", "qh.pt", *FAST)
    assert code == 0, err
    model, meta = load_quality_model(folder / "qh.pt")
    n_extra = len(meta.extra_features)
    assert n_extra >= 5 and meta.channels[0] == "image:0"
    assert model.head.in_features == model.num_features + n_extra
    assert len(meta.extra_mean) == len(meta.extra_std) == len(meta.extra_median) == n_extra
    code, _, err = run(monkeypatch, capsys, "score", "--model", "qh.pt", "-o", "h2.csv")
    assert code == 0, err
    fit = pd.read_csv(folder / "h.csv").query("split == 'test' and framework == 'hybrid'").set_index("case")
    again = pd.read_csv(folder / "h2.csv").query("framework == 'hybrid'").set_index("case")
    assert len(fit) == 3
    for cid, row in fit.iterrows():
        assert again.loc[cid, "predicted_dice"] == pytest.approx(row.predicted_dice, abs=1e-6)
    # the features matter: the same images with other features give other predictions
    import torch

    from uqseg_cli.io.store import StageFile
    from uqseg_cli.quality.inputs import build_inputs

    with StageFile(folder / "uncertainty.h5") as sf:
        x = build_inputs(sf.case("case01"), meta)[None]
    z = torch.zeros((1, n_extra))
    with torch.no_grad():
        assert float(model(x, z + 3.0)) != pytest.approx(float(model(x, z)), abs=1e-9)


def test_critic_cross_fits_saves_and_predicts_the_same_when_loaded(folder, monkeypatch, capsys):
    crit = ["--framework", "critic", "--method", "tta", "--measure", "entropy", "--backbone", "resnet18",
            "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]
    code, _, err = run(monkeypatch, capsys, "score", *crit, "--cv", "0", "-o", "c0.csv")
    assert code == 2 and "--framework critic needs cross-fitting" in err and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "score", *crit, "--critic-head", "median", "--cv", "3", "-o", "c.csv")
    assert code == 2 and "--critic-head 'median': choose from blend, boost, mean" in err
    code, _, err = run(monkeypatch, capsys, "score", *crit, "--cv", "3", "-o", "c.csv", "--save-model", "qc.pt",
                       "--critic-head", "mean", "--critic-tta", "8")
    assert code == 0, err
    summ = pd.read_csv(folder / "c.summary.csv").set_index("framework")
    assert summ.loc["critic", "detail"] == "3 critics fpn-resnet18 + mean of two boosts"
    assert summ.loc["critic", "n"] == 11 and "ignored" not in err
    obj = torch.load(folder / "qc.pt", weights_only=True)
    meta = obj["meta"]
    assert meta["critic_tta"] == 8
    assert meta["framework"] == "critic" and meta["critics"] == 3 and set(obj["arrays"]) == {"boost", "boost_features"}
    assert meta["features"][-4:] == ["critic/dice", "critic/soft_dice", "critic/log_volume_ratio", "critic/entropy"]
    assert {k.split(".")[0] for k in obj["state_dict"]} == {"critic0", "critic1", "critic2"}
    assert len(meta["training"]["critics"]) == 3
    code, out, err = run(monkeypatch, capsys, "info", "qc.pt")
    assert code == 0 and "3 critics fpn-resnet18" in out and "critic 2:" in out
    code, _, err = run(monkeypatch, capsys, "score", "--model", "qc.pt", "-o", "c2.csv", "--critic-tta", "2")
    assert code == 0, err
    assert "--critic-tta does not apply to --model qc.pt (nothing is fitted): ignored" in err
    fit = pd.read_csv(folder / "c.csv").query("split == 'test' and framework == 'critic'").set_index("case")
    again = pd.read_csv(folder / "c2.csv").query("framework == 'critic'").set_index("case")
    assert len(fit) == 3  # the two cases without a reference and the one the segmenter saw
    for cid, row in fit.iterrows():
        assert again.loc[cid, "predicted_dice"] == pytest.approx(row.predicted_dice, abs=1e-9)
    # the default head (blend): boosted trees and a ridge regression, kept in the file and reproduced by --model
    code, _, err = run(monkeypatch, capsys, "score", *crit, "--cv", "3", "-o", "d.csv", "--save-model", "qd.pt")
    assert code == 0, err
    assert pd.read_csv(folder / "d.summary.csv").set_index("framework").loc["critic", "detail"] == (
        "3 critics fpn-resnet18 + boost + ridge on critic features")
    obj = torch.load(folder / "qd.pt", weights_only=True)
    assert set(obj["arrays"]) == {"boost", "linear_critic"}
    code, out, _ = run(monkeypatch, capsys, "info", "qd.pt")
    assert code == 0 and "mean of a gradient-boosted regression and a ridge regression on the critic features" in out
    code, _, err = run(monkeypatch, capsys, "score", "--model", "qd.pt", "-o", "d2.csv")
    assert code == 0, err
    assert pd.read_csv(folder / "d2.summary.csv").set_index("framework").loc["critic", "detail"] == (
        "loaded 3 critics + boost + ridge on critic features")
    fit = pd.read_csv(folder / "d.csv").query("split == 'test' and framework == 'critic'").set_index("case")
    again = pd.read_csv(folder / "d2.csv").query("framework == 'critic'").set_index("case")
    np.testing.assert_allclose(again.loc[fit.index, "predicted_dice"], fit.predicted_dice, rtol=0, atol=1e-9)
    # regressor arrays that are no head: one line, exit 2, before any input is read
    obj["arrays"]["forest"] = obj["arrays"].pop("linear_critic")
    torch.save(obj, folder / "qbad.pt")
    code, _, err = run(monkeypatch, capsys, "score", "--model", "qbad.pt", "-o", "b.csv")
    assert code == 2 and "qbad.pt: weights do not match the model described in it: critic regressor models " in err
    assert "Traceback" not in err
    # a critic model is not a CNN regressor: tools that need one get one line
    with pytest.raises(Exception, match="critics and a regression on features"):
        load_quality_model(folder / "qc.pt")
