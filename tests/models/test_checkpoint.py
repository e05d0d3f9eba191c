"""Checkpoints: round trip gives identical outputs; pickled objects and foreign files are refused."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch

from uqseg_cli.errors import InputError
from uqseg_cli.models import create_model
from uqseg_cli.models.checkpoint import (
    Checkpoint,
    checkpoint_fingerprint,
    load_checkpoint,
    member_path,
    read_checkpoint,
    resolve_members,
    save_checkpoint,
)
from uqseg_cli.models.inference import Predictor
from uqseg_cli.models.preprocessing import Preprocessing


def _meta(model, **kw):
    prep = Preprocessing("ct", 1, [32, 32], "letterbox", 1.0, [-200.0, 300.0], [0.45], [0.2], 16)
    return Checkpoint(model.arch, model.init_args, prep, ["background", "kidney"], train_case_ids=["a", "b"], **kw)


@pytest.mark.parametrize("name", ["unet-small", "fpn-resnet18"])
def test_round_trip_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=2, dropout=0.1).eval()
    # perturb batch-norm statistics so that buffers matter too
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    meta = _meta(model, epochs=3, val_dice=0.875, data_fingerprint="abc", fold=1, folds=5, fold_case_ids=["c"])
    path = save_checkpoint(tmp_path / "seg.pt", model, meta)
    loaded, meta2 = load_checkpoint(path)
    assert meta2 == meta
    assert not loaded.training
    x = torch.randn(2, 1, 32, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    img = np.random.default_rng(0).normal(0, 200, (1, 29, 41)).astype(np.float32)
    a = Predictor(model, meta).predict_proba(img)
    b = Predictor.from_checkpoint(path).predict_proba(img)
    assert torch.equal(a, b)
    assert checkpoint_fingerprint(path) == checkpoint_fingerprint(path) and len(checkpoint_fingerprint(path)) == 32


def test_file_loads_with_plain_weights_only(tmp_path):
    model = create_model("unet-small", channels=(4, 8))
    path = save_checkpoint(tmp_path / "seg.pt", model, _meta(model))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "uqseg-checkpoint" and isinstance(raw["meta"], str)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_object_is_refused(tmp_path, capsys):
    model = create_model("unet-small", channels=(4, 8))
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "format": "uqseg-checkpoint",
            "version": 1,
            "meta": _meta(model).to_json(),
            "state_dict": model.state_dict(),
            "x": Evil(),
        },
        path,
    )
    with pytest.raises(InputError, match="refused: the file carries pickled Python objects") as ei:
        load_checkpoint(path)
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)
    assert "pwned" not in capsys.readouterr().out
    path2 = tmp_path / "ordered.pt"
    torch.save(collections.Counter(a=1), path2)
    with pytest.raises(InputError, match="refused"):
        read_checkpoint(path2)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"not a torch file at all", "not a uqseg checkpoint"),
        (b"", "not a uqseg checkpoint"),
    ],
)
def test_foreign_files_are_refused(tmp_path, content, match):
    p = tmp_path / "x.pt"
    p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_checkpoint(p)


def test_torch_file_without_header_and_missing_file(tmp_path):
    p = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, p)
    with pytest.raises(InputError, match="without the uqseg header"):
        load_checkpoint(p)
    p2 = tmp_path / "plain.pkl"
    p2.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError, match="not a uqseg checkpoint"):
        load_checkpoint(p2)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    model = create_model("unet-small", channels=(4, 8))
    path = save_checkpoint(tmp_path / "seg.pt", model, _meta(model))
    raw = torch.load(path, weights_only=True)
    raw["state_dict"].pop(next(iter(raw["state_dict"])))
    torch.save(raw, path)
    with pytest.raises(InputError, match="do not fit"):
        load_checkpoint(path)


def test_meta_must_describe_the_model(tmp_path):
    model = create_model("unet-small", channels=(4, 8))
    other = create_model("unet-small", channels=(4, 16))
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "seg.pt", model, _meta(other))


def test_members_are_found_in_order(tmp_path):
    model = create_model("unet-small", channels=(4, 8))
    for k in (0, 1, 2, 10):
        save_checkpoint(member_path(tmp_path / "seg.pt", k), model, _meta(model, member=k))
    save_checkpoint(tmp_path / "other.pt", model, _meta(model))
    names = [p.name for p in resolve_members(tmp_path / "seg.pt")]
    assert names == ["seg.pt", "seg.member1.pt", "seg.member2.pt", "seg.member10.pt"]
    assert [p.name for p in resolve_members(str(tmp_path / "seg*.pt"))] == names
    assert len(resolve_members(tmp_path)) == 5
    with pytest.raises(InputError, match="no checkpoint matches"):
        resolve_members(str(tmp_path / "zzz*.pt"))
