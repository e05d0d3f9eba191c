"""``stages.train`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.helpers import run_captured
from tests.models.fixtures import random_checkpoint, run_cli, write_disks
from uqseg_cli.errors import UqsegError
from uqseg_cli.models.checkpoint import checkpoint_fingerprint, load_checkpoint, read_checkpoint
from uqseg_cli.stages import train
from uqseg_cli.stages.base import Report
from uqseg_cli.training.augment import AugmentConfig
from uqseg_cli.training.loop import TrainedMember, TrainOptions

torch.set_num_threads(1)
FAST = ["-m", "unet-small", "--input-size", "32x32", "--batch-size", "2", "--epochs", "1", "--device", "cpu", "-q"]


def _fast(**kw) -> TrainOptions:
    return TrainOptions(arch="unet-small", input_size=[32, 32], batch_size=2, epochs=1, **kw)


def test_python_run_equals_the_command(tmp_path):
    images, masks = write_disks(tmp_path, 4)
    assert run_cli("train", "-i", images, "--masks", masks, "-o", tmp_path / "cli.pt", "--members", "2", "--seed",
                   "3", "--val-fraction", "0.5", *FAST) == 0
    opts = train.TrainStageOptions(input=images, masks=masks, output=tmp_path / "py.pt", device="cpu",
                                   training=_fast(members=2, seed=3, val_fraction=0.5))
    result = train.run(opts, Report(quiet=True))
    assert not result.failed and result.summary["log"] == str(tmp_path / "py.log.csv")
    assert [m["checkpoint"] for m in result.summary["members"]] == [str(tmp_path / "py.pt"),
                                                                    str(tmp_path / "py.member1.pt")]
    for a, b in (("cli.pt", "py.pt"), ("cli.member1.pt", "py.member1.pt")):
        (ma, ka), (mb, kb) = load_checkpoint(tmp_path / a), load_checkpoint(tmp_path / b)
        assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True))
        assert ka.training == kb.training and ka.train_case_ids == kb.train_case_ids
    assert read_checkpoint(tmp_path / "py.pt")[0].member_files == ["py.pt", "py.member1.pt"]
    la, lb = pd.read_csv(tmp_path / "cli.log.csv"), pd.read_csv(tmp_path / "py.log.csv")
    pd.testing.assert_frame_equal(la.drop(columns="seconds"), lb.drop(columns="seconds"))


def test_the_recorded_training_options_are_the_ones_the_command_recorded_before(tmp_path):
    """The checkpoint's ``training`` meta (TrainOptions.to_dict()) for one command line, pinned."""
    images, masks = write_disks(tmp_path, 3)
    out = tmp_path / "seg.pt"
    assert run_cli("train", "-i", images, "--masks", masks, "-o", out, "-m", "unet-small", "--epochs", "1",
                   "--input-size", "32x32", "--batch-size", "2", "--ct-window=-100,250", "--class-names",
                   "background,disk", "--no-augment", "--seed", "3", "--val-fraction", "0.4", "--dropout-at",
                   "decoder", "--resize", "letterbox", "--device", "cpu", "-q") == 0
    assert read_checkpoint(out)[0].training == {
        "arch": "unet-small", "epochs": 1, "batch_size": 2, "lr": 1e-3, "weight_decay": 1e-4,
        "warmup_fraction": 0.05, "dropout": 0.2, "dropout_at": "decoder", "model_kwargs": {}, "pretrained": False,
        "input_size": [32, 32], "max_side": 256, "resize": "letterbox", "modality": "auto",
        "ct_window": [-100.0, 250.0], "patch_size": [64, 64, 64], "patches_per_volume": 8, "halo": 16,
        "empty_slice_fraction": 0.2, "val_fraction": 0.4, "seed": 3, "members": 1, "folds": None,
        "augment": dataclasses.asdict(AugmentConfig(enabled=False)), "amp": True,
        "class_names": ["background", "disk"],
    }


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"arch": "no-such-net"}, "unknown model 'no-such-net'"),
        ({"dropout_at": "everywhere"}, "--dropout-at 'everywhere': expected head or decoder"),
        ({"resize": "crop"}, "--resize 'crop': expected stretch or letterbox"),
        ({"modality": "mri"}, "--modality 'mri': expected auto, photo or ct"),
        ({"folds": 3, "members": 2}, "--folds K already trains K members; leave --members out"),
    ],
)
def test_options_validate(kw, message):
    with pytest.raises(UqsegError, match=message):
        train.TrainStageOptions(input="x", training=TrainOptions(**kw))


def test_paths_of_members_and_log():
    opts = train.TrainStageOptions(input="x", output="out/seg.pt", training=TrainOptions(folds=3))
    assert opts.n_members == 3
    assert [str(p) for p in opts.member_paths] == ["out/seg.pt", "out/seg.member1.pt", "out/seg.member2.pt"]
    assert str(opts.log_path) == "out/seg.log.csv"
    assert str(train.TrainStageOptions(input="x", log="t.csv").log_path) == "t.csv"


def _members(tmp_path, n):
    out = []
    for k in range(n):
        model, meta = load_checkpoint(random_checkpoint(tmp_path / f"src{k}.pt", seed=k))
        meta.member, meta.members = k, n
        out.append(TrainedMember(model, meta, []))
    return out


def test_save_members_replaces_all_files_together_or_none(tmp_path):
    outs = [tmp_path / "seg.pt", tmp_path / "seg.member1.pt", tmp_path / "seg.member2.pt"]
    for p in outs:
        p.write_bytes(b"old " + p.name.encode())
    members = _members(tmp_path, 3)

    def dies(items):
        yield from items[:2]
        raise RuntimeError("killed while training member 2")

    seen = []
    with pytest.raises(RuntimeError):
        train.save_members(dies(members), outs, lambda meta, path: seen.append((meta.member, path.name)))
    assert seen == [(0, "seg.pt"), (1, "seg.member1.pt")]
    assert [p.read_bytes() for p in outs] == [b"old " + p.name.encode() for p in outs]  # nothing changed
    assert not list(tmp_path.glob(".*tmp*"))

    train.save_members(iter(members), outs, lambda meta, path: None)
    main = read_checkpoint(outs[0])[0]
    assert main.member_files == ["seg.pt", "seg.member1.pt", "seg.member2.pt"]
    assert main.member_fingerprints == [checkpoint_fingerprint(outs[1]), checkpoint_fingerprint(outs[2])]
    assert [read_checkpoint(p)[0].member for p in outs] == [0, 1, 2]
    assert not list(tmp_path.glob(".*tmp*"))


def test_an_unreadable_case_is_left_out_and_exits_1(tmp_path, capsys):
    images, masks = write_disks(tmp_path, 4)
    bad = np.zeros((30, 40), np.uint8)
    bad[:, 20:] = 7  # no label of background, disk
    Image.fromarray(bad).save(masks / "c02.png")
    out = tmp_path / "seg.pt"
    code, _, err = run_captured(capsys, "train", "-i", images, "--masks", masks, "-o", out, "--class-names",
                                "background,disk", "--val-fraction", "0", *FAST)
    assert code == 1 and out.exists()
    assert err.strip().splitlines()[-1] == "uqseg: 1 case(s) could not be read: c02"
    assert "c02" not in read_checkpoint(out)[0].train_case_ids
    result = train.run(train.TrainStageOptions(input=images, masks=masks, output=tmp_path / "py.pt", device="cpu",
                                               training=_fast(class_names=["background", "disk"], val_fraction=0)),
                       Report(quiet=True))
    assert list(result.failed) == ["c02"] and "not labels" in result.failed["c02"]
