"""`QualityMeta`: the typed meta of ``quality.pt`` writes exactly the dicts files always held; the format version
(files without one are version 1, other versions are refused in one line)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.helpers import run_captured
from tests.quality.synth import write_chain
from uqseg_cli.errors import InputError
from uqseg_cli.io.store import StageFile
from uqseg_cli.quality.checkpoint import VERSION, load_quality_model, read_quality_checkpoint, save_quality_model
from uqseg_cli.quality.describe import describe_quality_model
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import create_quality_model
from uqseg_cli.quality.scoring import cnn_meta

# the meta dicts the code wrote before QualityMeta (keys in file order)
OLD_FEATURES = {
    "format": "uqseg-quality/1",
    "framework": "features",
    "method": "tta",
    "measure": "combined",
    "target": "dice",
    "features": ["entropy/image", "entropy/foreground", "combined/foreground", "volume/foreground"],
    "combined_stats": None,
    "train_cases": ["case01", "case02"],
}
OLD_CNN = {
    "format": "uqseg-quality/1",
    "framework": "seg-unc",
    "method": "tta",
    "measure": "entropy",
    "measures": ["entropy"],
    "target": "dice",
    "backbone": "test_resnet",
    "pretrained": False,
    "dims": 2,
    "input_size": [32, 32],
    "num_classes": 2,
    "image_channels": 0,
    "channels": ["seg:1", "unc:entropy"],
    "dropout": 0.2,
    "channel_mean": [0.17, 0.41],
    "channel_std": [0.37, 0.12],
    "training": {"epochs_run": 7, "best_epoch": 1, "best_val_mse": 0.004, "n_train": 54, "n_val": 14, "lr": 0.001,
                 "batch_size": 16, "augment": True, "seed": 1, "loss": "mse"},
    "train_cases": ["case01", "case02"],
    "segmenter": {"predict_file": "predict.h5", "predict_fingerprint": "be86", "checkpoint": "seg.pt"},
}
OLD_HYBRID = {  # every optional CNN key: hybrid features, started from a segmenter's encoder
    **{k: v for k, v in OLD_CNN.items() if k not in ("channel_mean", "channel_std", "training", "train_cases",
                                                      "segmenter")},
    "framework": "hybrid",
    "image_channels": 3,
    "channels": ["image:0", "image:1", "image:2", "seg:1", "unc:entropy"],
    "extra_features": ["entropy/image", "volume/foreground"],
    "init_from": "runs/seg.pt",
    "channel_mean": [1.0, 2.0, 3.0, 0.2, 0.4],
    "channel_std": [4.0, 5.0, 6.0, 0.3, 0.1],
    "extra_median": [0.1, 2.0],
    "extra_mean": [0.2, 2.5],
    "extra_std": [0.05, 1.0],
    "init_tensors_from_segmenter": 62,
    "training": OLD_CNN["training"],
    "train_cases": ["case01"],
    "segmenter": {},
}


@pytest.mark.parametrize("old", [OLD_FEATURES, OLD_CNN, OLD_HYBRID], ids=["features", "cnn", "hybrid"])
def test_round_trip_to_the_exact_old_dict(old):
    meta = QualityMeta.from_dict(old)
    d = meta.to_dict()
    assert d == old and list(d) == list(old)  # the same keys (none added, none lost) in the same order
    assert QualityMeta.from_dict(d) == meta


def test_features_meta_has_no_cnn_keys_and_typed_fields():
    meta = QualityMeta.from_dict(OLD_FEATURES)
    assert meta.features == OLD_FEATURES["features"] and meta.backbone is None and not meta.is_cnn
    assert "backbone" not in meta.to_dict() and "measures" not in meta.to_dict()
    cnn = QualityMeta.from_dict(OLD_CNN)
    assert cnn.is_cnn and cnn.input_size == [32, 32] and cnn.training["n_train"] == 54
    assert "extra_features" not in cnn.to_dict() and "init_from" not in cnn.to_dict()
    assert cnn.measure_list == ["entropy"] and dataclasses.replace(cnn, measures=None).measure_list == ["entropy"]


def test_cnn_meta_builds_the_old_description(tmp_path):
    write_chain(tmp_path, n=3, shape=(20, 24))
    with StageFile(tmp_path / "uncertainty.h5") as sf:
        view = sf.case("case00")
        seg_unc = cnn_meta(view, "seg-unc", "tta", "entropy", ["confidence", "entropy"], "resnet18", [32], "dice",
                           False, 2)
        hybrid = cnn_meta(view, "hybrid", "tta", "combined", ["confidence", "entropy"], "resnet18", None, "iou",
                          True, 2, extra_features=["entropy/image"])
    assert seg_unc.to_dict() == {
        "format": "uqseg-quality/1", "framework": "seg-unc", "method": "tta", "measure": "entropy",
        "measures": ["entropy"], "target": "dice", "backbone": "resnet18", "pretrained": False, "dims": 2,
        "input_size": [32, 32], "num_classes": 2, "image_channels": 0, "channels": ["seg:1", "unc:entropy"],
        "dropout": 0.2,
    }
    assert hybrid.to_dict() == {
        "format": "uqseg-quality/1", "framework": "hybrid", "method": "tta", "measure": "combined",
        "measures": ["confidence", "entropy"], "target": "iou", "backbone": "resnet18", "pretrained": True,
        "dims": 2, "input_size": [128, 128], "num_classes": 2, "image_channels": 3,
        "channels": ["image:0", "image:1", "image:2", "seg:1", "unc:confidence", "unc:entropy"], "dropout": 0.2,
        "extra_features": ["entropy/image"],
    }


def test_unknown_meta_keys_are_ignored():
    meta = QualityMeta.from_dict({**OLD_FEATURES, "written_by": "a later uqseg"})
    assert meta == QualityMeta.from_dict(OLD_FEATURES)


def _cnn_file(path):
    meta = QualityMeta.from_dict(OLD_CNN)
    save_quality_model(path, meta, create_quality_model(meta))
    return meta


def test_file_holds_the_version_beside_the_format(tmp_path):
    meta = _cnn_file(tmp_path / "q.pt")
    raw = torch.load(tmp_path / "q.pt", weights_only=True)
    assert list(raw) == ["format", "version", "meta", "state_dict", "arrays"]
    assert raw["version"] == VERSION == 1 and raw["meta"] == OLD_CNN and list(raw["meta"]) == list(OLD_CNN)
    loaded = read_quality_checkpoint(tmp_path / "q.pt")
    assert loaded["meta"] == meta and loaded["version"] == 1
    model, meta2 = load_quality_model(tmp_path / "q.pt")
    assert meta2 == meta and isinstance(meta2, QualityMeta)


def _without_version(path):
    raw = torch.load(path, weights_only=True)
    del raw["version"]
    torch.save(raw, path)


def test_a_file_written_before_the_version_loads(tmp_path, capsys):
    meta = _cnn_file(tmp_path / "old.pt")
    _without_version(tmp_path / "old.pt")
    assert "version" not in torch.load(tmp_path / "old.pt", weights_only=True)
    assert read_quality_checkpoint(tmp_path / "old.pt")["version"] == 1
    _, meta2 = load_quality_model(tmp_path / "old.pt")
    assert meta2 == meta
    # a features model of before, with a key this uqseg does not know
    arrays = {"linear": {"coef": torch.zeros(4, dtype=torch.float64)}}
    torch.save({"format": "uqseg-quality/1", "meta": {**OLD_FEATURES, "future_key": [1, 2]}, "state_dict": {},
                "arrays": arrays}, tmp_path / "oldf.pt")
    loaded = read_quality_checkpoint(tmp_path / "oldf.pt")
    assert loaded["meta"] == QualityMeta.from_dict(OLD_FEATURES) and loaded["arrays"]["linear"]["coef"].shape == (4,)
    d = describe_quality_model(tmp_path / "oldf.pt")
    assert d["framework"] == "features" and d["features"] == OLD_FEATURES["features"] and d["train_cases"] == 2
    code, out, err = run_captured(capsys, "info", tmp_path / "old.pt")
    assert code == 0 and "quality model" in out, err


def test_an_unknown_version_is_refused_in_one_line(tmp_path, capsys):
    _cnn_file(tmp_path / "new.pt")
    raw = torch.load(tmp_path / "new.pt", weights_only=True)
    raw["version"] = 2
    torch.save(raw, tmp_path / "new.pt")
    msg = f"{tmp_path / 'new.pt'}: quality model version 2 is not supported (this uqseg reads version 1"
    with pytest.raises(InputError, match="quality model version 2 is not supported") as exc:
        read_quality_checkpoint(tmp_path / "new.pt")
    assert str(exc.value).startswith(msg)
    with pytest.raises(InputError, match="version 2"):
        load_quality_model(tmp_path / "new.pt")
    code, _, err = run_captured(capsys, "info", tmp_path / "new.pt")
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_a_meta_is_changed_by_replace_only():
    meta = QualityMeta.from_dict(OLD_CNN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.dims = 3  # type: ignore[misc]
    assert dataclasses.replace(meta, init_from="seg.pt").to_dict()["init_from"] == "seg.pt"
