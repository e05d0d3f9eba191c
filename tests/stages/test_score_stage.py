"""``stages.score`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import typing
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.helpers import run_cli
from tests.quality.synth import write_chain
from uqseg_cli.errors import UqsegError
from uqseg_cli.metrics.overlap import TARGETS
from uqseg_cli.quality.checkpoint import read_quality_checkpoint
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.training import LOSSES
from uqseg_cli.stages import score
from uqseg_cli.stages.base import Report, resume_config

FAST = dict(backbone="test_resnet", input_size="32", epochs=1, batch_size=8, device="cpu")
FAST_ARGS = ["--backbone", "test_resnet", "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    write_chain(tmp_path, n=10, shape=(24, 24), no_ref=("case09",), train_ids=("case00",))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    torch.set_num_threads(threads)


def _meta(path: Path) -> QualityMeta:
    return read_quality_checkpoint(path)["meta"]


def test_python_run_equals_the_command_features(folder):
    args = ["--measure", "entropy,combined", "--cv", "3", "--feature-models", "linear,forest", "--seed", "2"]
    assert run_cli("score", "-q", *args, "-o", "cli.csv", "--save-model", "cli.pt") == 0
    opts = score.ScoreOptions(output="py.csv", save_model="py.pt", measures=["entropy", "combined"], cv=3,
                              feature_models=["linear", "forest"], seed=2)
    result = score.run(opts, Report(quiet=True))
    assert not result.failed and len(result.done) == 10
    doc = result.summary
    assert doc["cv"] == 3 and doc["n_labelled"] == 8 and doc["summary_csv"] == "py.summary.csv"
    assert doc["models"] == ["py.tta.entropy.features.pt", "py.tta.combined.features.pt"]
    for a, b in (("cli.csv", "py.csv"), ("cli.summary.csv", "py.summary.csv")):
        assert (folder / a).read_bytes() == (folder / b).read_bytes(), a
    for meas in ("entropy", "combined"):
        assert _meta(f"cli.tta.{meas}.features.pt") == _meta(f"py.tta.{meas}.features.pt")


def test_python_run_equals_the_command_cnn_and_model(folder):
    args = ["--framework", "seg-unc", "--measure", "entropy", "--cv", "2", *FAST_ARGS]
    assert run_cli("score", "-q", *args, "-o", "cli.csv", "--save-model", "cli.pt") == 0
    opts = score.ScoreOptions(output="py.csv", save_model="py.pt", frameworks=["seg-unc"], measures=["entropy"],
                              cv=2, **FAST)
    score.run(opts, Report(quiet=True))
    meta_cli, meta_py = _meta("cli.pt"), _meta("py.pt")
    assert meta_cli == meta_py and meta_py.input_size == [32, 32]
    a, b = pd.read_csv(folder / "cli.csv"), pd.read_csv(folder / "py.csv")
    pd.testing.assert_frame_equal(a, b, atol=1e-5)
    # a saved model predicts instead of fitting; its method, measure and framework are taken over
    result = score.run(score.ScoreOptions(model="py.pt", output="again.csv", device="cpu"), Report(quiet=True))
    assert result.summary["models"] == [] and result.summary["target"] == "dice"
    again = pd.read_csv(folder / "again.csv")
    assert set(again.framework) == {"seg-unc", "baseline"} and set(again.measure) == {"entropy"}
    with pytest.raises(UqsegError, match="py.pt is a seg-unc model"):
        score.run(score.ScoreOptions(model="py.pt", frameworks=["features"], output="x.csv"))


def test_options_validate_with_the_commands_messages():
    with pytest.raises(UqsegError, match="--target 'hd95': choose dice or iou"):
        score.ScoreOptions(target="hd95")
    with pytest.raises(UqsegError, match="--framework cnn: choose from seg-unc"):
        score.ScoreOptions(frameworks=["features", "cnn"])
    with pytest.raises(UqsegError, match="--feature-models svm: choose from linear"):
        score.ScoreOptions(feature_models=["svm"])
    with pytest.raises(UqsegError, match="--loss 'l1': choose from mse"):
        score.ScoreOptions(loss="l1")
    with pytest.raises(UqsegError, match="--input-size '4': every size must be at least 8"):
        score.ScoreOptions(input_size="4")
    assert score.ScoreOptions(input_size="192x256").input_size == [192, 256]
    assert score.ScoreOptions(input_size=[64]).input_size == [64]
    assert score.ScoreOptions(output="-").summary_path is None
    assert str(score.ScoreOptions(output="o/s.csv").summary_path) == "o/s.summary.csv"


def test_model_path_per_configuration():
    assert score.model_path_for(Path("q.pt"), 1, "tta", "entropy", "features") == Path("q.pt")
    assert score.model_path_for(Path("d/q.pt"), 2, "tta", "entropy", "seg-unc") == Path("d/q.tta.entropy.seg-unc.pt")


def test_result_changing_options_are_the_config_fields():
    # score writes tables and quality.pt, not a resumable HDF5 file: the config fields document what changes them
    assert resume_config(score.ScoreOptions(input_size="96")) == {
        "methods": [], "measures": [], "frameworks": [], "target": "dice", "model": None, "cv": 5,
        "backbone": "resnet18", "pretrained": False, "input_size": [96], "epochs": None, "patience": 6,
        "val_fraction": None, "lr": None, "loss": "mse", "init_from": "auto", "feature_models": [],
        "agreement_channel": False, "fold_ensemble": False, "vote_level_pairs": False, "learn_mask": None,
        "critic_head": "blend",
        "critic_tta": 1, "batch_size": 16, "features": None, "include_train_cases": False, "failure_threshold": None,
        "seed": 0,
    }


def test_training_defaults_per_framework():
    o = score.ScoreOptions()
    cnn, critic = o.fit_config("seg-unc"), o.fit_config("critic")
    assert (cnn.epochs, cnn.val_fraction, cnn.lr) == (30, 0.2, 1e-3)
    assert (critic.epochs, critic.val_fraction, critic.lr) == (48, 0.0, 5e-4)
    mask = o.fit_config("seg-unc", mask=True)
    assert (mask.epochs, mask.val_fraction, mask.lr) == (30, 0.0, 1e-3)  # without the image: the whole part
    assert o.fit_config("img-seg-unc", mask=True) == o.fit_config("img-seg-unc") == o.fit_config("hybrid", mask=True)
    assert score.ScoreOptions(val_fraction=0.2).fit_config("seg-unc", mask=True).val_fraction == 0.2
    given = score.ScoreOptions(epochs=3, val_fraction=0.1, lr=0.01).fit_config("critic")
    assert (given.epochs, given.val_fraction, given.lr) == (3, 0.1, 0.01)  # what the user gives wins


def test_cli_choices_are_the_stage_choices():
    from uqseg_cli.cli.score import CRITIC_HEADS, Loss, Target
    from uqseg_cli.quality.critic_head import CRITIC_HEADS as STAGE_CRITIC_HEADS

    assert typing.get_args(Target) == TARGETS
    assert typing.get_args(Loss) == LOSSES
    assert CRITIC_HEADS == STAGE_CRITIC_HEADS


@pytest.mark.parametrize(
    ("given", "frameworks", "loaded", "ignored"),
    [
        ({}, ["features"], False, []),
        ({"critic_tta": 8, "loss": "huber", "epochs": 3}, ["features"], False, ["--critic-tta", "--loss", "--epochs"]),
        ({"critic_head": "mean", "loss": "huber", "epochs": 3}, ["seg-unc"], False, ["--critic-head"]),
        ({"loss": "huber", "fold_ensemble": True, "epochs": 3, "critic_tta": 2}, ["critic"], False,
         ["--loss", "--fold-ensemble"]),
        ({"loss": "huber", "critic_tta": 2}, ["critic", "hybrid"], False, []),
        ({"epochs": 3, "feature_models": ["boost"], "batch_size": 4}, ["seg-unc"], True,
         ["--epochs", "--feature-models"]),
    ],
)
def test_options_nothing_reads_are_named(given, frameworks, loaded, ignored):
    assert score.ignored_options(score.ScoreOptions(**given), frameworks, loaded) == ignored
