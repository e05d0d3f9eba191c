"""`uqseg train` through the real entry point: members, folds, manifests, logs, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.models.fixtures import run_cli, write_disks, write_volume
from uqseg_cli.models.checkpoint import load_checkpoint

torch.set_num_threads(1)
FAST = ["-m", "unet-small", "--input-size", "32x32", "--batch-size", "2", "-q"]


def test_members_log_and_checkpoints(tmp_path, capsys):
    images, masks = write_disks(tmp_path, 5)
    out = tmp_path / "seg.pt"
    rc = run_cli(
        "train",
        "-i",
        images,
        "--masks",
        masks,
        "-o",
        out,
        "--epochs",
        "2",
        "--members",
        "2",
        "--val-fraction",
        "0.4",
        "--class-names",
        "background,disk",
        "--json",
        *FAST,
    )
    assert rc == 0
    assert out.exists() and (tmp_path / "seg.member1.pt").exists()
    log = pd.read_csv(tmp_path / "seg.log.csv")
    assert list(log.columns) == ["member", "fold", "epoch", "lr", "train_loss", "val_dice", "seconds", "best"]
    assert log[["member", "epoch"]].values.tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    (m0, k0), (m1, k1) = load_checkpoint(out), load_checkpoint(tmp_path / "seg.member1.pt")
    assert (k0.member, k1.member, k0.members) == (0, 1, 2)
    assert k0.class_names == ["background", "disk"]
    assert k0.train_case_ids == k1.train_case_ids and len(k0.val_case_ids) == 2
    assert sorted(k0.train_case_ids + k0.val_case_ids) == [f"c{i:02d}" for i in range(5)]
    assert k0.val_dice == pytest.approx(log[log.member == 0].val_dice.max())
    assert k0.preprocessing.input_size == [32, 32] and k0.preprocessing.modality == "photo"
    assert k0.training["epochs"] == 2 and len(k0.data_fingerprint) == 32
    assert not all(torch.equal(a, b) for a, b in zip(m0.state_dict().values(), m1.state_dict().values(), strict=True))
    assert '"best_epoch"' in capsys.readouterr().out
    # an existing checkpoint is not overwritten without --overwrite
    assert run_cli("train", "-i", images, "--masks", masks, "-o", out, "--epochs", "1", *FAST) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_seed_makes_training_reproducible(tmp_path):
    images, masks = write_disks(tmp_path, 4)
    for name in ("a.pt", "b.pt"):
        assert (
            run_cli(
                "train", "-i", images, "--masks", masks, "-o", tmp_path / name, "--epochs", "1", "--seed", "3", *FAST
            )
            == 0
        )
    (ma, _), (mb, _) = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert all(torch.equal(a, b) for a, b in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True))


def test_folds_leave_each_fold_out(tmp_path):
    images, masks = write_disks(tmp_path, 6)
    out = tmp_path / "seg.pt"
    assert (
        run_cli(
            "train",
            "-i",
            images,
            "--masks",
            masks,
            "-o",
            out,
            "--epochs",
            "1",
            "--folds",
            "3",
            "--val-fraction",
            "0",
            *FAST,
        )
        == 0
    )
    metas = [load_checkpoint(p)[1] for p in (out, tmp_path / "seg.member1.pt", tmp_path / "seg.member2.pt")]
    held = [m.fold_case_ids for m in metas]
    assert sorted(sum(held, [])) == [f"c{i:02d}" for i in range(6)]
    for k, m in enumerate(metas):
        assert m.fold == k and m.folds == 3 and m.members == 3
        assert not set(m.train_case_ids) & set(m.fold_case_ids)
        assert sorted(m.train_case_ids + m.fold_case_ids) == [f"c{i:02d}" for i in range(6)]
    # all members share one preprocessing (the ensemble sampler requires it)
    assert metas[0].preprocessing == metas[1].preprocessing == metas[2].preprocessing


def test_manifest_split_column_sets_validation(tmp_path):
    images, masks = write_disks(tmp_path, 5)
    rows = [
        {
            "case": f"c{i:02d}",
            "image": f"images/c{i:02d}.png",
            "mask": f"masks/c{i:02d}.png",
            "split": ["train", "train", "val", "train", "test"][i],
        }
        for i in range(5)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    assert run_cli("train", "-i", tmp_path / "cases.csv", "-o", tmp_path / "seg.pt", "--epochs", "1", *FAST) == 0
    _, meta = load_checkpoint(tmp_path / "seg.pt")
    assert meta.train_case_ids == ["c00", "c01", "c03"] and meta.val_case_ids == ["c02"]


def test_3d_model_trains_on_volumes(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i in range(2):
        p = write_volume(tmp_path / "img" / f"v{i}.nii.gz", seed=i)
        p.with_name(f"v{i}_mask.nii.gz").rename(tmp_path / "lab" / f"v{i}.nii.gz")
    out = tmp_path / "seg3d.pt"
    assert (
        run_cli(
            "train",
            "-i",
            tmp_path / "img",
            "--masks",
            tmp_path / "lab",
            "-m",
            "unet3d-small",
            "-o",
            out,
            "--epochs",
            "1",
            "--patch-size",
            "16",
            "--input-size",
            "16x16x16",
            "--halo",
            "4",
            "--patches-per-volume",
            "2",
            "--batch-size",
            "2",
            "--val-fraction",
            "0.5",
            "-q",
        )
        == 0
    )
    _, meta = load_checkpoint(out)
    assert meta.arch == "unet3d-small" and meta.preprocessing.modality == "ct"
    assert meta.preprocessing.intensity_window == [-200.0, 300.0] and meta.dims == 3


@pytest.mark.parametrize(
    "args,message",
    [
        (["-m", "no-such-net"], "unknown model 'no-such-net'"),
        (["--input-size", "abc"], "--input-size 'abc'"),
        (["--ct-window", "300,-200"], "LO must be below HI"),
        (["--folds", "2", "--members", "2"], "--folds K already trains K members"),
        (["--folds", "9"], "--folds 9"),
        (["-m", "unet3d-small", "--input-size", "16", "--halo", "2"], "is 3D; the training cases are 2D"),
        # 0/255 masks are binary: with three classes the value 255 is no label (validated per case since issue 12)
        (["--class-names", "a,b,c"], "expected labels 0..2 of the classes a, b, c"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    images, masks = write_disks(tmp_path, 3)
    rc = run_cli(
        "train",
        "-i",
        images,
        "--masks",
        masks,
        "-o",
        tmp_path / "x.pt",
        "--epochs",
        "1",
        "--input-size",
        "32x32",
        *args,
    )
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert "Traceback" not in err


def test_missing_masks_are_reported(tmp_path, capsys):
    images, masks = write_disks(tmp_path, 3)
    rc = run_cli("train", "-i", images, "-o", tmp_path / "x.pt", "--epochs", "1", *FAST)
    assert rc == 2 and "needs a mask for every case" in capsys.readouterr().err
    assert np is not None
